#ifndef EPINFER_ROUTER_ROUTER_MAIN_H_
#define EPINFER_ROUTER_ROUTER_MAIN_H_

namespace epinfer {

// The router process: public epinfer.v1.Completions, internal epinfer.v1.Cluster, /metrics.
// Both the `router` binary and `epinfer router` run this.
int RunRouter(int argc, char** argv);

}  // namespace epinfer

#endif  // EPINFER_ROUTER_ROUTER_MAIN_H_
