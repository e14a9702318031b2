#!/usr/bin/env bash
# install_test_deps.sh — make sure the host test dependencies are present: cmocka
# (headers + library) and python3. Installs libcmocka-dev with apt-get when it is missing
# and we may (root, or passwordless sudo); otherwise says what to install and fails.
set -u
have_cmocka() {
  printf '#include <setjmp.h>\n#include <stdarg.h>\n#include <stddef.h>\n#include <stdint.h>\n#include <cmocka.h>\nint main(void){return 0;}\n' \
    | ${CC:-cc} -x c - -o /dev/null -lcmocka >/dev/null 2>&1
}
if ! command -v python3 >/dev/null 2>&1; then
  echo "install_test_deps: python3 is required (apt-get install python3)" >&2
  exit 1
fi
# cuobjdump (+ nvdisasm, which it runs) for the disassembly checks: from the toolkit when
# it has them, else NVIDIA's PyPI wheels into build/tools (run_tests.sh looks there).
cuda_bin=$(dirname "$(command -v nvcc 2>/dev/null || echo /usr/local/cuda/bin/nvcc)")
if ! command -v cuobjdump >/dev/null 2>&1 && [ ! -x "$cuda_bin/cuobjdump" ] &&
   [ ! -x build/tools/nvidia/cu13/bin/cuobjdump ]; then
  # Pinned: the toolkit's own release when NVIDIA publishes a wheel of it, else the
  # oldest CUDA 13 wheel (13.2.51; none exists for 13.0/13.1), which reads their cubins.
  rel=$(nvcc --version 2>/dev/null | sed -n 's/.*release \([0-9]*\.[0-9]*\).*/\1/p')
  echo "install_test_deps: cuobjdump not found; installing NVIDIA's wheels into build/tools" >&2
  for pin in "${rel:+==$rel.*}" "==${CUOBJDUMP_WHEEL:-13.2.51}"; do
    [ -n "$pin" ] || continue
    python3 -m pip install -q --disable-pip-version-check --target build/tools \
      "nvidia-cuda-cuobjdump$pin" "nvidia-cuda-nvdisasm$pin" >/dev/null 2>&1 && break
  done
  [ -x build/tools/nvidia/cu13/bin/cuobjdump ] ||
    echo "install_test_deps: pip could not install cuobjdump; disassembly checks will be skipped" >&2
fi
# clang with libFuzzer and the sanitizer runtimes, for scripts/fuzz.sh.
have_fuzzer() {
  local c
  c=$(command -v clang || command -v clang-14 || command -v clang-15 || command -v clang-16) || return 1
  printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n){(void)d;(void)n;return 0;}\n' \
    | "$c" -x c -fsanitize=fuzzer,address,undefined - -o /dev/null >/dev/null 2>&1
}
apt_install() {  # apt_install PACKAGE...: as root or with passwordless sudo
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
  command -v apt-get >/dev/null 2>&1 || return 1
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -q "$@" >/dev/null 2>&1 ||
    { $sudo apt-get update -q >/dev/null 2>&1 && $sudo apt-get install -y -q "$@" >/dev/null 2>&1; }
}
if ! have_fuzzer; then
  echo "install_test_deps: clang with libFuzzer not found; installing clang" >&2
  apt_install clang || true
  have_fuzzer || { echo "install_test_deps: could not install clang with libFuzzer (apt-get install clang); fuzzing will fail" >&2; exit 1; }
fi
have_cmocka && exit 0
echo "install_test_deps: cmocka not found; installing libcmocka-dev" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
if command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -q libcmocka-dev >/dev/null 2>&1 ||
    { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q libcmocka-dev >/dev/null 2>&1; }
elif command -v dnf >/dev/null 2>&1; then
  $SUDO dnf install -y libcmocka-devel >/dev/null 2>&1
fi
if have_cmocka; then
  echo "install_test_deps: cmocka installed" >&2
  exit 0
fi
echo "install_test_deps: could not install cmocka; install it yourself:" >&2
echo "  Debian/Ubuntu: sudo apt-get install libcmocka-dev    Fedora: sudo dnf install libcmocka-devel" >&2
exit 1
