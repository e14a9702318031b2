// plan_check.h — the CHECK macro of the lab layers' host tests (labs/NN_*/plan_test.cpp).
// CHECK(cond, fmt, ...): when cond is false, count a failure in `fails`, print
// "FAILED: <fmt ...>  (cond, line N)" and return from the calling (void) test function.
// A test's main ends with `return fails ? 1 : 0;`.
#pragma once
#include <stdio.h>

static int fails = 0;
#define CHECK(cond, ...)                            \
  do {                                              \
    if (!(cond)) {                                  \
      fails++;                                      \
      printf("FAILED: " __VA_ARGS__);               \
      printf("  (%s, line %d)\n", #cond, __LINE__); \
      return;                                       \
    }                                               \
  } while (0)
