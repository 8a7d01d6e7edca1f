#ifndef EPINFER_COMMON_STATUS_MACROS_H_
#define EPINFER_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Debian's abseil (20220623) has no public status macros; these are the usual two.
#define EPI_CONCAT_INNER_(a, b) a##b
#define EPI_CONCAT_(a, b) EPI_CONCAT_INNER_(a, b)

#define RETURN_IF_ERROR(expr)                      \
  do {                                             \
    ::absl::Status epi_status_ = (expr);           \
    if (!epi_status_.ok()) return epi_status_;     \
  } while (false)

#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL_(EPI_CONCAT_(epi_statusor_, __LINE__), lhs, expr)

#define ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                           \
  if (!tmp.ok()) return tmp.status();          \
  lhs = std::move(tmp).value()

#endif  // EPINFER_COMMON_STATUS_MACROS_H_
