#include "common/metrics.h"

#include "gtest/gtest.h"
#include "httplib.h"
#include "prometheus/counter.h"

namespace epinfer {
namespace {

TEST(MetricsServerTest, ServesProcessBuildAndRegisteredMetricsOverHttp) {
  auto server = MetricsServer::Start("127.0.0.1:0", "test");
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_GT((*server)->port(), 0);
  prometheus::BuildCounter()
      .Name("epinfer_test_events_total")
      .Help("events")
      .Register((*server)->registry())
      .Add({})
      .Increment(3);

  httplib::Client client("127.0.0.1", (*server)->port());
  client.set_connection_timeout(5);
  client.set_read_timeout(5);
  auto response = client.Get("/metrics");
  ASSERT_TRUE(response) << httplib::to_string(response.error());
  EXPECT_EQ(response->status, 200);
  const std::string& body = response->body;
  EXPECT_NE(body.find("epinfer_test_events_total 3"), std::string::npos) << body;
  EXPECT_NE(body.find("epinfer_build_info{"), std::string::npos);
  EXPECT_NE(body.find("component=\"test\""), std::string::npos);
  EXPECT_NE(body.find("process_resident_memory_bytes"), std::string::npos);
  EXPECT_NE(body.find("process_cpu_seconds_total"), std::string::npos);
  EXPECT_NE(body.find("process_open_fds"), std::string::npos);
}

TEST(MetricsServerTest, PortInUseIsAnError) {
  auto first = MetricsServer::Start("127.0.0.1:0", "a");
  ASSERT_TRUE(first.ok());
  auto second = MetricsServer::Start("127.0.0.1:" + std::to_string((*first)->port()), "b");
  EXPECT_FALSE(second.ok());
}

}  // namespace
}  // namespace epinfer
