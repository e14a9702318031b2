/* nvtx.c — NVTX3 ranges in the "gauntlet" domain (see nvtx.h). */
#include "nvtx.h"

#include <nvtx3/nvToolsExt.h>
#include <stdio.h>
#include <string.h>

static nvtxDomainHandle_t g_domain;
static nvtxStringHandle_t g_phase[GTL_PHASE_COUNT];

static nvtxDomainHandle_t domain(void) {
  if (!g_domain) g_domain = nvtxDomainCreateA("gauntlet");
  return g_domain;
}

void gtl_nvtx_init(const char *target, const char *variant) {
  static const char *phase[GTL_PHASE_COUNT] = {"setup", "reference", "validate", "warmup",
                                               "timed"};
  char t[64];
  snprintf(t, sizeof t, "%s", target);
  for (char *c = t; *c; c++)
    if (*c == '/' || *c == '-') *c = '_';
  for (int p = 0; p < GTL_PHASE_COUNT; p++) {
    char name[160];
    snprintf(name, sizeof name, "%s.%s.%s", t, variant, phase[p]);
    g_phase[p] = nvtxDomainRegisterStringA(domain(), name);
  }
}

static nvtxEventAttributes_t attributes(nvtxStringHandle_t h, int with_payload,
                                        long long payload) {
  nvtxEventAttributes_t a;
  memset(&a, 0, sizeof a);
  a.version = NVTX_VERSION;
  a.size = NVTX_EVENT_ATTRIB_STRUCT_SIZE;
  a.messageType = NVTX_MESSAGE_TYPE_REGISTERED;
  a.message.registered = h;
  if (with_payload) {
    a.payloadType = NVTX_PAYLOAD_TYPE_INT64;
    a.payload.llValue = payload;
  }
  return a;
}

static void push(nvtxStringHandle_t h, int with_payload, long long payload) {
  nvtxEventAttributes_t a = attributes(h, with_payload, payload);
  nvtxDomainRangePushEx(domain(), &a);
}

void gtl_phase_push(GtlPhase p) {
  if ((unsigned)p < GTL_PHASE_COUNT) push(g_phase[p], 0, 0);
}
void gtl_phase_pop(void) { nvtxDomainRangePop(domain()); }

const void *gtl_nvtx_name(const char *name) {
  return (const void *)nvtxDomainRegisterStringA(domain(), name);
}
void gtl_nvtx_push(const void *name) { push((nvtxStringHandle_t)name, 0, 0); }
void gtl_nvtx_push_payload(const void *name, long long payload) {
  push((nvtxStringHandle_t)name, 1, payload);
}
void gtl_nvtx_pop(void) { nvtxDomainRangePop(domain()); }

unsigned long long gtl_nvtx_start_payload(const void *name, long long payload) {
  nvtxEventAttributes_t a = attributes((nvtxStringHandle_t)name, 1, payload);
  return (unsigned long long)nvtxDomainRangeStartEx(domain(), &a);
}
void gtl_nvtx_end(unsigned long long id) { nvtxDomainRangeEnd(domain(), (nvtxRangeId_t)id); }
