#ifndef EPINFER_SCHEDULER_SCHEDULER_MAIN_H_
#define EPINFER_SCHEDULER_SCHEDULER_MAIN_H_

namespace epinfer {

// The EP group's balancer: epinfer.v1.Scheduler and /metrics. Both the `scheduler` binary and
// `epinfer scheduler` run this.
int RunScheduler(int argc, char** argv);

}  // namespace epinfer

#endif  // EPINFER_SCHEDULER_SCHEDULER_MAIN_H_
