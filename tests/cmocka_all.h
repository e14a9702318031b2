/* cmocka_all.h — the includes cmocka needs, in the order it needs them. */
#pragma once
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
