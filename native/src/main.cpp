// edgebench-native: the native benchmark harness (see native/README.md and docs/native.md).
#include "harness.hpp"

int main(int argc, char** argv) { return eb::harness_main(argc, argv); }
