#include "core/socket.h"

#include <gtest/gtest.h>

namespace fulcrum::core {
namespace {

SocketAddress loopback(uint16_t port) { return *SocketAddress::parse("127.0.0.1:" + std::to_string(port)); }

TEST(ListenTcpGroupTest, PortZeroGivesTheWholeGroupOnePort) {
  std::string error;
  std::vector<Fd> group = listenTcpGroup(loopback(0), 3, error);
  ASSERT_EQ(group.size(), 3u) << error;
  uint16_t port = localAddress(group[0].get()).port();
  EXPECT_NE(port, 0);
  for (const Fd& fd : group) {
    EXPECT_EQ(localAddress(fd.get()).port(), port);
  }
}

TEST(ListenTcpGroupTest, ASecondGroupOnTheSameAddressIsRefused) {
  std::string error;
  std::vector<Fd> first = listenTcpGroup(loopback(0), 2, error);
  ASSERT_EQ(first.size(), 2u) << error;
  SocketAddress taken = localAddress(first[0].get());
  // Both would join by SO_REUSEPORT and split the connections: the second must fail instead.
  std::vector<Fd> second = listenTcpGroup(taken, 2, error);
  EXPECT_TRUE(second.empty());
  EXPECT_NE(error.find("Address already in use"), std::string::npos) << error;
  EXPECT_NE(error.find(taken.toString()), std::string::npos) << error;
}

TEST(ListenTcpGroupTest, AnotherProgramsListenerIsRefused) {
  std::string error;
  Fd other = listenTcp(loopback(0), ListenOptions{.reuse_port = false}, error);
  ASSERT_TRUE(other.valid()) << error;
  EXPECT_TRUE(listenTcpGroup(localAddress(other.get()), 1, error).empty());
  EXPECT_NE(error.find("Address already in use"), std::string::npos) << error;
}

TEST(ListenTcpGroupTest, TheAddressIsFreeAgainOnceTheGroupCloses) {
  std::string error;
  SocketAddress address;
  {
    std::vector<Fd> group = listenTcpGroup(loopback(0), 2, error);
    ASSERT_EQ(group.size(), 2u) << error;
    address = localAddress(group[0].get());
  }
  std::vector<Fd> again = listenTcpGroup(address, 2, error);
  EXPECT_EQ(again.size(), 2u) << error;
}

}  // namespace
}  // namespace fulcrum::core
