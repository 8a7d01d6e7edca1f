#include "scheduler/scheduler_main.h"

int main(int argc, char** argv) { return epinfer::RunScheduler(argc, argv); }
