#include <cuda_runtime_api.h>
#include <nccl.h>

#include "gtest/gtest.h"

TEST(CudaLinkTest, NcclAndCudartAnswerTheirVersions) {
  int nccl_version = 0;
  ASSERT_EQ(ncclGetVersion(&nccl_version), ncclSuccess);
  EXPECT_GE(nccl_version, NCCL_VERSION(2, 0, 0));
  int runtime_version = 0;
  ASSERT_EQ(cudaRuntimeGetVersion(&runtime_version), cudaSuccess);
  EXPECT_GE(runtime_version, 12000);
}
