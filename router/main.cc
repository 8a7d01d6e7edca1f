#include "router/router_main.h"

int main(int argc, char** argv) { return epinfer::RunRouter(argc, argv); }
