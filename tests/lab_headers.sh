#!/usr/bin/env bash
# lab_headers.sh — the headers the lab may include compile alone and all together with the
# lab frame, warnings as errors, and hold no chapter driver. Host only (nvcc -c, no GPU).
#   1. each header of HEADERS alone in a translation unit (it includes what it uses);
#   2. none of them parses flags or reports (gtl_parse, gtl_report_*: a driver's work);
#   3. every header, the engine, layer 00 and each test-only layer (tests/lab_layers/*.cu)
#      in one translation unit: a kernel, type or macro defined twice fails here;
#   4. one name per kernel across the project (a template and a plain kernel of one name
#      would overload, not clash, in step 3);
#   5. the lab rule of the Makefile passes a layer's own flags (PROG_NVCCFLAGS).
# A chapter header the lab starts to include is added to HEADERS.
# Prints "ok: ..." / "FAILED: ..." lines and "lab_headers: N passed, M failed"; exit 1 on
# any failure.
set -u
cd "$(dirname "$0")/.." || exit 3
NVCC=${NVCC:-nvcc}
HEADERS="ch01/batched_gemm.cuh ch06/topk.cuh ch07/permute.cuh ch08/gemv.cuh ch10/mma.cuh
ch10/wgmma.cuh ch11/overlap.cuh ch12/launch.cuh ch15/dispatch.cuh ch15/grouped.cuh ch16/paged_kv.cuh
ch18/decode_attn.cuh ch19/decode_attn_fp8.cuh
labs/moe/frame.cuh labs/00_baseline/kernels.cuh labs/00_baseline/layer.cuh labs/01_basics/kernels.cuh
labs/01_basics/layer.cuh labs/02_memory/layer.cuh
labs/03_tiling/grouped.cuh labs/03_tiling/proj.cuh labs/03_tiling/layer.cuh labs/04_graphs/layer.cuh
labs/05_precision/weights8.cuh labs/05_precision/grouped8.cuh labs/05_precision/layer.cuh"
FLAGS="-std=c++17 -gencode=arch=compute_90,code=sm_90 -Icommon -Ibuild -Xcompiler -Wall,-Wextra
-Werror all-warnings -Xcompiler -Werror"
tmp=$(mktemp -d) || exit 3
trap 'rm -rf "$tmp"' EXIT
pass=0; fail=0
ok() { pass=$((pass + 1)); echo "ok: $*"; }
bad() { fail=$((fail + 1)); echo "FAILED: $*"; }
compile() {  # compile NAME FILE.cu: nvcc -c, the first errors shown on failure
  # shellcheck disable=SC2086
  if "$NVCC" $FLAGS -c "$2" -o "${2%.cu}.o" > "${2%.cu}.log" 2>&1; then ok "$1"
  else bad "$1"; grep -m 6 -i 'error' "${2%.cu}.log"; fi
}
[ -f build/version.h ] || { mkdir -p build && printf '#define GTL_GIT_SHA "test"\n#define GTL_ARCH_BUILT "sm_90"\n#define GTL_NVCC_VERSION "test"\n' > build/version.h; }

i=0
for h in $HEADERS; do
  i=$((i + 1))
  [ -f "$h" ] || { bad "$h: missing"; continue; }
  printf '#include "%s"\n' "$PWD/$h" > "$tmp/alone$i.cu"
  compile "$h alone" "$tmp/alone$i.cu"
  if grep -nE '\bgtl_parse\(|\bgtl_report_[a-z_]+\(' "$h"; then bad "$h: a driver's code (flags or report) in a lab header"
  else ok "$h: no driver"; fi
done

for layer in tests/lab_layers/*.cu; do
  i=$((i + 1))
  {
    for h in $HEADERS; do printf '#include "%s"\n' "$PWD/$h"; done
    printf '#include "%s"\n' "$PWD/labs/moe/engine.cuh" "$PWD/$layer"
  } > "$tmp/together$i.cu"
  compile "every header + the frame + $layer" "$tmp/together$i.cu"
done

# The override shown in labs/README.md compiles as written (its includes made absolute).
sed -n '/^```c$/,/^```$/p' labs/README.md | sed '1d;$d' | sed "s|\"\\.\\./\\.\\./|\"$PWD/|" > "$tmp/readme_layer.cu"
if [ -s "$tmp/readme_layer.cu" ]; then compile "labs/README.md's example layer" "$tmp/readme_layer.cu"
else bad "labs/README.md: no c code block"; fi

# Every __global__ function name of the project's sources, once.
dups=$(python3 - <<'PY'
import glob, re
pat = re.compile(r'__global__\s+(?:void\s+)?(?:__launch_bounds__\s*\((?:[^()]|\([^()]*\))*\)\s*)?(?:void\s+)?(\w+)\s*\(')
seen = {}
files = sorted(glob.glob('ch[0-9][0-9]/*.cu') + glob.glob('ch[0-9][0-9]/*.cuh') + glob.glob('common/*.cu') +
               glob.glob('labs/*/*.cu') + glob.glob('labs/*/*.cuh') + glob.glob('tests/lab_layers/*.cu'))
for f in files:
    src = re.sub(r'//[^\n]*', '', open(f, encoding='utf-8').read())
    for m in pat.finditer(src):
        seen.setdefault(m.group(1), set()).add(f)
for name, where in sorted(seen.items()):
    if len(where) > 1:
        print('%s: %s' % (name, ' '.join(sorted(where))))
PY
)
if [ -z "$dups" ]; then ok "kernel names unique across the project"
else bad "kernel names defined in more than one file:"; printf '%s\n' "$dups"; fi

# A target-specific flag on a layer reaches its compile line (make -n prints, builds nothing).
probe=$(printf 'labs/00_baseline/decode: PROG_NVCCFLAGS += -DGTL_LAB_FLAG_PROBE\nlabs/00_baseline/decode: PROG_LDLIBS += -lGTL_LAB_LIB_PROBE\n')
line=$(make -s -n -B -f Makefile -f <(printf '%s\n' "$probe") labs/00_baseline/decode 2>/dev/null | grep -- '-o labs/00_baseline/decode ')
if printf '%s' "$line" | grep -q -- '-DGTL_LAB_FLAG_PROBE' && printf '%s' "$line" | grep -q -- '-lGTL_LAB_LIB_PROBE'; then
  ok "Makefile: the lab rule passes PROG_NVCCFLAGS and PROG_LDLIBS"
else bad "Makefile: the lab rule ignores per-program flags"; fi

echo "lab_headers: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
