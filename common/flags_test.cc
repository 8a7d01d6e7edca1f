#include "common/flags.h"

#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "gtest/gtest.h"

ABSL_FLAG(int, test_port, 7, "a port");
ABSL_FLAG(bool, test_verbose, false, "talk more");
ABSL_FLAG(std::string, test_name, "x", "a name");

namespace epinfer {
namespace {

TEST(ParseFlagsTest, AcceptsEqualsSpaceAndBoolForms) {
  auto positional = ParseFlags({"serve", "--test_port=9", "--test_name", "abc", "--test_verbose",
                                "extra"});
  ASSERT_TRUE(positional.ok()) << positional.status();
  EXPECT_EQ(absl::GetFlag(FLAGS_test_port), 9);
  EXPECT_EQ(absl::GetFlag(FLAGS_test_name), "abc");
  EXPECT_TRUE(absl::GetFlag(FLAGS_test_verbose));
  EXPECT_EQ(*positional, (std::vector<std::string>{"serve", "extra"}));
  ASSERT_TRUE(ParseFlags({"--notest_verbose"}).ok());
  EXPECT_FALSE(absl::GetFlag(FLAGS_test_verbose));
}

TEST(ParseFlagsTest, UnknownFlagIsAnErrorNamingIt) {
  auto result = ParseFlags({"--test_prot=9"});
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(result.status().message().find("--test_prot"), std::string::npos);
}

TEST(ParseFlagsTest, MalformedValueIsAnError) {
  auto result = ParseFlags({"--test_port=nine"});
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("test_port"), std::string::npos);
  EXPECT_FALSE(ParseFlags({"--test_port"}).ok());  // value missing
  EXPECT_FALSE(ParseFlags({"--notest_verbose=1"}).ok());
}

TEST(ParseFlagsTest, AbslInternalFlagsAreNotAccepted) {
  EXPECT_FALSE(ParseFlags({"--flagfile=/etc/passwd"}).ok());
}

TEST(ParseFlagsTest, DoubleDashEndsFlags) {
  auto positional = ParseFlags({"--", "--test_port=3"});
  ASSERT_TRUE(positional.ok());
  EXPECT_EQ(*positional, std::vector<std::string>{"--test_port=3"});
}

TEST(FlagsUsageTest, ListsOwnFlagsWithDefaults) {
  std::string usage = FlagsUsage("prog", "[flags]");
  EXPECT_NE(usage.find("--test_port  a port (default: 7)"), std::string::npos) << usage;
  EXPECT_EQ(usage.find("--flagfile"), std::string::npos);
}

void ParseBogusFlag() {
  std::vector<std::string> args = {"prog", "--bogus"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  ParseFlagsOrExit(static_cast<int>(argv.size()), argv.data(), "[flags]");
}

TEST(ParseFlagsOrExitTest, BadFlagExitsWithCode2) {
  EXPECT_EXIT(ParseBogusFlag(), ::testing::ExitedWithCode(2), "unknown flag --bogus");
}

}  // namespace
}  // namespace epinfer
