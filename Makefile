# MoE Gauntlet — one GNU Make file. `make help` lists every target.
#
#   make ch10            build ch10/baseline and ch10/optimized (every chNN/*.cu is a program)
#   make all             every chapter and the common library
#   make test            host tests (cmocka), waive checks, expectations schema
#   make ARCH=sm_90a …   target another architecture (sm_80 sm_90 sm_90a sm_100 sm_100a)
#   make DEBUG=1 …       device debug info (-G): timings are then meaningless
#   make WERROR=1 …      warnings are errors (CI)

NVCC      ?= nvcc
CC        ?= gcc
ARCH      ?= sm_90
CUDA_HOME ?= $(patsubst %/bin/,%,$(dir $(shell command -v $(NVCC) 2>/dev/null)))
PYTHON    ?= python3

SUPPORTED_ARCHS := sm_80 sm_90 sm_90a sm_100 sm_100a
ifeq ($(filter $(ARCH),$(SUPPORTED_ARCHS)),)
$(error ARCH=$(ARCH) is not one of: $(SUPPORTED_ARCHS))
endif
# sm_90a / sm_100a are arch-specific targets: machine code only, no PTX (it would not
# run elsewhere anyway). The others embed PTX too, so newer GPUs can JIT them.
comma    := ,
arch_num  = $(patsubst sm_%,%,$(1))
gencode   = $(if $(filter %a,$(1)),-gencode=arch=compute_$(call arch_num,$(1))$(comma)code=$(1),-gencode=arch=compute_$(call arch_num,$(1))$(comma)code=[$(1)$(comma)compute_$(call arch_num,$(1))])
GENCODE  := $(call gencode,$(ARCH))

NVCC_VERSION := $(shell $(NVCC) --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\).*/\1/p')
GIT_SHA      ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)$(shell git diff --quiet HEAD -- 2>/dev/null || echo -dirty)
ifeq ($(filter help clean,$(MAKECMDGOALS)),)
$(info [gauntlet] nvcc $(if $(NVCC_VERSION),$(NVCC_VERSION),NOT FOUND), ARCH=$(ARCH), git $(GIT_SHA))
endif

WARN_C    := -Wall -Wextra
NVCCFLAGS := -std=c++17 -O3 -lineinfo $(GENCODE) -Icommon -Ibuild -Xcompiler -Wall,-Wextra
CFLAGS    := -std=c11 -O2 -D_GNU_SOURCE $(WARN_C) -Icommon -Ibuild -I$(CUDA_HOME)/include
ifeq ($(WERROR),1)
NVCCFLAGS += -Werror all-warnings -Xcompiler -Werror
CFLAGS    += -Werror
endif
ifeq ($(DEBUG),1)
$(warning DEBUG=1: device code built with -G; timings are meaningless)
NVCCFLAGS := $(filter-out -O3 -lineinfo,$(NVCCFLAGS)) -G -O0
endif
LDLIBS := -lcublasLt -lcublas -ldl

# ---- common/ → build/libcommon.a (host-only .c files also → build/libcommon_host.a) --
COMMON_C   := $(wildcard common/*.c)
COMMON_CU  := $(wildcard common/*.cu)
COMMON_OBJ := $(COMMON_C:common/%.c=build/common/%.o) $(COMMON_CU:common/%.cu=build/common/%.cu.o)
HOST_OBJ   := $(COMMON_C:common/%.c=build/common/%.o)

build/libcommon.a: $(COMMON_OBJ)
	ar rcs $@ $^
build/libcommon_host.a: $(HOST_OBJ)
	ar rcs $@ $^
# version.h is order-only here; report.o, the one file that includes it, gets the real
# dependency from its -MMD file (and the line below for the very first build).
build/common/%.o: common/%.c | build/common build/version.h
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@
build/common/report.o: build/version.h
build/common/%.cu.o: common/%.cu | build/common build/version.h
	$(NVCC) $(NVCCFLAGS) -MMD -MP -c $< -o $@
build/common build/dep tests/bin:
	mkdir -p $@

# Rewritten only when the commit or the architecture changes.
build/version.h: FORCE | build/common
	@printf '#define GTL_GIT_SHA "%s"\n#define GTL_ARCH_BUILT "%s"\n#define GTL_NVCC_VERSION "%s"\n' "$(GIT_SHA)" "$(ARCH)" "$(NVCC_VERSION)" > $@.tmp
	@cmp -s $@.tmp $@ || mv $@.tmp $@; rm -f $@.tmp
FORCE:

# ---- chapters: every chNN/*.cu is one program, built beside its source ---------------
PROGRAM_SRC := $(sort $(wildcard ch[0-9][0-9]/*.cu))
PROGRAMS    := $(PROGRAM_SRC:.cu=)
CHAPTERS    := $(sort $(patsubst %/,%,$(dir $(PROGRAM_SRC))))

$(PROGRAMS): %: %.cu build/libcommon.a | build/dep
	$(NVCC) $(NVCCFLAGS) $(PROG_NVCCFLAGS) -MMD -MP -MF build/dep/$(subst /,_,$@).d -o $@ $< build/libcommon.a $(LDLIBS) $(PROG_LDLIBS)

define chapter_rule
.PHONY: $(1)
$(1): $(filter $(1)/%,$(PROGRAMS))
endef
$(foreach c,$(CHAPTERS),$(eval $(call chapter_rule,$(c))))

# A program that needs more than the common flags says so here, one line each.
ch10/optimized: PROG_NVCCFLAGS += -gencode=arch=compute_90a,code=sm_90a  # wgmma, setmaxnreg (ch10/wgmma.cuh)
ch05/optimized: PROG_LDLIBS += -lpthread  # ring_loader.cuh's reader threads (glibc < 2.34 keeps pthreads apart)
# ch12: the lab's mini preset and CPU reference (labs/moe); libcommon.a again after libmoe.a,
# which uses it.
ch12/baseline ch12/optimized: build/libmoe.a
ch12/%: PROG_LDLIBS += build/libmoe.a build/libcommon.a -lpthread
# ch04: NCCL from NCCL_HOME (default: the first of the toolkit, /usr, /usr/local with
# include/nccl.h; a pip wheel works too: NCCL_HOME=<site-packages>/nvidia/nccl). Without
# it ch04/optimized builds but waives. MPI=1 adds the multi-node bootstrap (mpicc's flags).
NCCL_HOME ?= $(firstword $(foreach d,$(CUDA_HOME) /usr /usr/local,$(if $(wildcard $(d)/include/nccl.h),$(d))))
NCCL_OWN   = $(filter-out /usr /usr/local $(CUDA_HOME),$(NCCL_HOME))
NCCL_NVCCFLAGS = $(if $(NCCL_HOME),-DGTL_HAVE_NCCL $(if $(NCCL_OWN),-I$(NCCL_HOME)/include))
NCCL_LDLIBS    = $(if $(NCCL_HOME),$(if $(NCCL_OWN),-L$(NCCL_HOME)/lib -Xlinker -rpath=$(NCCL_HOME)/lib) -l:libnccl.so.2)
ch04/optimized: PROG_NVCCFLAGS += $(NCCL_NVCCFLAGS)
ch04/optimized: PROG_LDLIBS += $(NCCL_LDLIBS)
ch04/%: PROG_NVCCFLAGS += $(if $(filter 1,$(MPI)),-DGTL_MPI $(filter -I%,$(shell mpicc --showme:compile 2>/dev/null || mpicc -show 2>/dev/null)))
ch04/%: PROG_LDLIBS += -lpthread $(if $(filter 1,$(MPI)),$(filter -L% -l%,$(shell mpicc --showme:link 2>/dev/null || mpicc -show 2>/dev/null)))
$(if $(NCCL_HOME),,$(if $(filter ch04 ch04/optimized,$(MAKECMDGOALS)),$(warning ch04/optimized: nccl.h not found under NCCL_HOME, $(CUDA_HOME), /usr or /usr/local; it will build and waive. Install NCCL (apt-get install libnccl-dev from NVIDIA's CUDA repository, or pip install nvidia-nccl-cu13), then: make -B ch04 NCCL_HOME=<folder with include/nccl.h and lib/libnccl.so.2>)))

# ---- tests -----------------------------------------------------------------------------
TEST_SRC  := $(wildcard tests/test_*.c)
TEST_BINS := $(TEST_SRC:tests/%.c=tests/bin/%)
tests/bin/%: tests/%.c build/libcommon_host.a | tests/bin
	$(CC) $(CFLAGS) -Itests -o $@ $< build/libcommon_host.a -lcmocka -lm

# The same tests built with AddressSanitizer + UndefinedBehaviorSanitizer (any report is
# fatal): build/san/ holds common/*.c and labs/moe/*.c compiled with the sanitizers.
SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g
SAN_OBJ   := $(COMMON_C:common/%.c=build/san/common_%.o) $(patsubst labs/moe/%.c,build/san/moe_%.o,$(wildcard labs/moe/*.c))
SAN_BINS  := $(TEST_SRC:tests/%.c=tests/bin-san/%)
build/san tests/bin-san:
	mkdir -p $@
build/san/common_%.o: common/%.c | build/san build/version.h
	$(CC) $(CFLAGS) $(SAN_FLAGS) -MMD -MP -c $< -o $@
build/san/moe_%.o: labs/moe/%.c | build/san
	$(CC) $(CFLAGS) $(SAN_FLAGS) -MMD -MP -c $< -o $@
build/san/libsan.a: $(SAN_OBJ)
	ar rcs $@ $^
tests/bin-san/%: tests/%.c build/san/libsan.a | tests/bin-san
	$(CC) $(CFLAGS) $(SAN_FLAGS) -Ilabs/moe -Itests -o $@ $< build/san/libsan.a -lcmocka -lm -lpthread
# A test of a header-only chapter module rebuilds when that header changes.
tests/bin/test_ch20_cache tests/bin-san/test_ch20_cache: ch20/tune_cache.h
-include $(wildcard build/san/*.d)

# The README's pictures (docs/plots/*.png) from expectations/h200.json; matplotlib is
# installed into build/tools/py when python3 lacks it.
.PHONY: plots
plots:
	@$(PYTHON) -c "import matplotlib" 2>/dev/null || $(PYTHON) -c "import sys; sys.path.insert(0, 'build/tools/py'); import matplotlib" 2>/dev/null || \
	  $(PYTHON) -m pip install -q --disable-pip-version-check --target build/tools/py matplotlib
	@PYTHONPATH=build/tools/py$${PYTHONPATH:+:$$PYTHONPATH} $(PYTHON) scripts/plots.py

# libFuzzer harnesses (tests/fuzz/): `make fuzz FUZZ_SECONDS=600`; `make test` runs each briefly.
FUZZ_SECONDS ?= 30
.PHONY: fuzz
fuzz: build/version.h
	@scripts/fuzz.sh $(FUZZ_SECONDS)

# ---- labs/: the MoE decode engine (labs/README.md) ------------------------------------
# labs/moe/*.c is the lab's host model core (config, checkpoint, CPU reference, sampler),
# plain C11: build/libmoe.a (programs) and build/libmoe_host.a (tests) hold the same
# objects. Every labs/NN_*/*.cu is one program beside its source (labs/00_baseline/decode).
MOE_C        := $(wildcard labs/moe/*.c)
MOE_OBJ      := $(MOE_C:labs/moe/%.c=build/moe/%.o)
LAB_SRC      := $(sort $(wildcard labs/[0-9][0-9]_*/*.cu))
LAB_PROGRAMS := $(LAB_SRC:.cu=)
build/moe:
	mkdir -p $@
build/moe/%.o: labs/moe/%.c | build/moe
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@
build/libmoe.a build/libmoe_host.a: $(MOE_OBJ)
	ar rcs $@ $^
# A layer that needs more than the common flags says so like a chapter does, one line
# each (e.g. labs/NN_x/decode: PROG_NVCCFLAGS += -gencode=arch=compute_90a,code=sm_90a, or
# += $(NCCL_NVCCFLAGS) with PROG_LDLIBS += $(NCCL_LDLIBS)). tests/lab_layers/*.cu are
# test-only layers (make lab-test-layers; tests/lab_headers.sh compiles them in CI).
LAB_TEST_PROGRAMS := $(patsubst %.cu,%,$(wildcard tests/lab_layers/*.cu))
$(LAB_PROGRAMS) $(LAB_TEST_PROGRAMS): %: %.cu build/libmoe.a build/libcommon.a | build/dep
	$(NVCC) $(NVCCFLAGS) $(PROG_NVCCFLAGS) -MMD -MP -MF build/dep/$(subst /,_,$@).d -o $@ $< build/libmoe.a build/libcommon.a $(LDLIBS) -lpthread $(PROG_LDLIBS)
.PHONY: lab-test-layers
lab-test-layers: $(LAB_TEST_PROGRAMS)
tests/bin/test_lab_%: tests/test_lab_%.c build/libmoe_host.a build/libcommon_host.a | tests/bin
	$(CC) $(CFLAGS) -Ilabs/moe -Itests -o $@ $< build/libmoe_host.a build/libcommon_host.a -lcmocka -lm -lpthread
.PHONY: labs
labs: $(LAB_PROGRAMS)
all: labs
-include $(wildcard build/moe/*.d)

.PHONY: all chapters test test-deps tests clean help
all: build/libcommon.a $(PROGRAMS)
chapters: $(PROGRAMS)

test-deps:
	@scripts/install_test_deps.sh

tests: test-deps
	@$(MAKE) --no-print-directory $(TEST_BINS)

# The test build treats warnings as errors: `make all` must stay warning-free.
test: test-deps
	@$(MAKE) --no-print-directory WERROR=1 all $(TEST_BINS) $(SAN_BINS)
	@SAN_TESTS="$(SAN_BINS)" scripts/run_tests.sh $(TEST_BINS)

clean:
	rm -rf build tests/bin tests/bin-san $(PROGRAMS) $(LAB_PROGRAMS) $(LAB_TEST_PROGRAMS)

help:
	@echo "MoE Gauntlet — targets:"
	@echo "  make chNN        build one chapter: $(CHAPTERS)"
	@echo "  make labs        build the MoE decode engine's layers: $(LAB_PROGRAMS)"
	@echo "  make all         build every program for ARCH=$(ARCH)"
	@echo "  make test        build all, run host tests, waive checks, expectations schema"
	@echo "  make plots       redraw docs/plots/*.png from expectations/h200.json"
	@echo "  make fuzz        libFuzzer harnesses of tests/fuzz, FUZZ_SECONDS each (default 30)"
	@echo "  make clean       remove build outputs"
	@echo "variables: ARCH=$(SUPPORTED_ARCHS)  DEBUG=1  WERROR=1  NVCC=…  GIT_SHA=…"
	@echo "programs: $(PROGRAMS)"

-include $(wildcard build/common/*.d build/dep/*.d)
