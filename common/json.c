/* json.c — a small recursive-descent JSON reader (RFC 8259) into a tree (see json.h). */
#include "json.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  const char *s;
  size_t n, i;
  int depth;
  char *err;
  size_t errlen;
} Parser;

static GtlJson *fail(Parser *p, const char *why) {
  if (p->err && p->errlen && !p->err[0]) snprintf(p->err, p->errlen, "offset %zu: %s", p->i, why);
  return NULL;
}

static void skip_ws(Parser *p) {
  while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' ||
                         p->s[p->i] == '\r'))
    p->i++;
}

static GtlJson *node(GtlJsonType t) {
  GtlJson *j = (GtlJson *)calloc(1, sizeof *j);
  if (j) j->type = t;
  return j;
}

static int hex4(Parser *p, unsigned *out) {
  if (p->i + 4 > p->n) return -1;
  unsigned v = 0;
  for (int k = 0; k < 4; k++) {
    char c = p->s[p->i++];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
    else return -1;
  }
  *out = v;
  return 0;
}

static size_t put_utf8(char *o, unsigned cp) {
  if (cp < 0x80) { o[0] = (char)cp; return 1; }
  if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
  if (cp < 0x10000) {
    o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[2] = (char)(0x80 | (cp & 0x3F)); return 3;
  }
  o[0] = (char)(0xF0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F)); return 4;
}

/* At an opening quote: returns a malloc'd unescaped string. An escape never grows the
 * text (\uXXXX is 6 bytes for at most 3 UTF-8 bytes; a pair is 12 for 4), so the raw
 * length bounds the output. */
static char *parse_string(Parser *p) {
  p->i++; /* opening quote */
  size_t start = p->i, end = start;
  while (end < p->n && p->s[end] != '"') end += (p->s[end] == '\\') ? 2 : 1;
  if (end >= p->n) { fail(p, "unterminated string"); return NULL; }
  char *o = (char *)malloc(end - start + 1);
  if (!o) { fail(p, "out of memory"); return NULL; }
  size_t k = 0;
  while (p->i < end) {
    unsigned char c = (unsigned char)p->s[p->i];
    if (c < 0x20) { free(o); fail(p, "control character in string"); return NULL; }
    if (c != '\\') { o[k++] = (char)c; p->i++; continue; }
    p->i++;
    char e = p->s[p->i++];
    switch (e) {
      case '"': o[k++] = '"'; break;
      case '\\': o[k++] = '\\'; break;
      case '/': o[k++] = '/'; break;
      case 'b': o[k++] = '\b'; break;
      case 'f': o[k++] = '\f'; break;
      case 'n': o[k++] = '\n'; break;
      case 'r': o[k++] = '\r'; break;
      case 't': o[k++] = '\t'; break;
      case 'u': {
        unsigned cp, lo;
        if (hex4(p, &cp)) { free(o); fail(p, "bad \\u escape"); return NULL; }
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          if (p->i + 2 > end || p->s[p->i] != '\\' || p->s[p->i + 1] != 'u') {
            free(o); fail(p, "unpaired surrogate"); return NULL;
          }
          p->i += 2;
          if (hex4(p, &lo) || lo < 0xDC00 || lo > 0xDFFF) { free(o); fail(p, "bad surrogate pair"); return NULL; }
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
          free(o); fail(p, "unpaired surrogate"); return NULL;
        }
        if (cp == 0) { free(o); fail(p, "\\u0000 not supported"); return NULL; }
        k += put_utf8(o + k, cp);
        break;
      }
      default: free(o); fail(p, "bad escape"); return NULL;
    }
  }
  o[k] = '\0';
  p->i = end + 1;
  return o;
}

static GtlJson *parse_value(Parser *p);

static GtlJson *parse_container(Parser *p, int is_obj) {
  if (++p->depth > 64) return fail(p, "nesting deeper than 64");
  GtlJson *j = node(is_obj ? GTL_JSON_OBJ : GTL_JSON_ARR), *last = NULL;
  if (!j) return fail(p, "out of memory");
  p->i++;
  skip_ws(p);
  char close = is_obj ? '}' : ']';
  if (p->i < p->n && p->s[p->i] == close) { p->i++; p->depth--; return j; }
  for (;;) {
    char *key = NULL;
    skip_ws(p);
    if (is_obj) {
      if (p->i >= p->n || p->s[p->i] != '"') { gtl_json_free(j); return fail(p, "expected a string key"); }
      key = parse_string(p);
      if (!key) { gtl_json_free(j); return NULL; }
      skip_ws(p);
      if (p->i >= p->n || p->s[p->i] != ':') { free(key); gtl_json_free(j); return fail(p, "expected ':'"); }
      p->i++;
    }
    GtlJson *v = parse_value(p);
    if (!v) { free(key); gtl_json_free(j); return NULL; }
    v->key = key;
    if (last) last->next = v; else j->child = v;
    last = v;
    j->n++;
    skip_ws(p);
    if (p->i < p->n && p->s[p->i] == ',') { p->i++; continue; }
    if (p->i < p->n && p->s[p->i] == close) { p->i++; break; }
    gtl_json_free(j);
    return fail(p, is_obj ? "expected ',' or '}'" : "expected ',' or ']'");
  }
  p->depth--;
  return j;
}

static GtlJson *parse_number(Parser *p) {
  size_t i = p->i;
  if (i < p->n && p->s[i] == '-') i++;
  if (i >= p->n || !(p->s[i] >= '0' && p->s[i] <= '9')) return fail(p, "bad number");
  if (p->s[i] == '0') i++;
  else while (i < p->n && p->s[i] >= '0' && p->s[i] <= '9') i++;
  if (i < p->n && p->s[i] == '.') {
    i++;
    if (i >= p->n || !(p->s[i] >= '0' && p->s[i] <= '9')) return fail(p, "bad fraction");
    while (i < p->n && p->s[i] >= '0' && p->s[i] <= '9') i++;
  }
  if (i < p->n && (p->s[i] == 'e' || p->s[i] == 'E')) {
    i++;
    if (i < p->n && (p->s[i] == '+' || p->s[i] == '-')) i++;
    if (i >= p->n || !(p->s[i] >= '0' && p->s[i] <= '9')) return fail(p, "bad exponent");
    while (i < p->n && p->s[i] >= '0' && p->s[i] <= '9') i++;
  }
  char buf[64];
  size_t len = i - p->i;
  if (len >= sizeof buf) return fail(p, "number too long");
  memcpy(buf, p->s + p->i, len);
  buf[len] = '\0';
  GtlJson *j = node(GTL_JSON_NUM);
  if (!j) return fail(p, "out of memory");
  j->num = strtod(buf, NULL);
  p->i = i;
  return j;
}

static GtlJson *parse_value(Parser *p) {
  skip_ws(p);
  if (p->i >= p->n) return fail(p, "unexpected end of input");
  char c = p->s[p->i];
  if (c == '{') return parse_container(p, 1);
  if (c == '[') return parse_container(p, 0);
  if (c == '"') {
    char *s = parse_string(p);
    if (!s) return NULL;
    GtlJson *j = node(GTL_JSON_STR);
    if (!j) { free(s); return fail(p, "out of memory"); }
    j->str = s;
    return j;
  }
  if (c == '-' || (c >= '0' && c <= '9')) return parse_number(p);
  static const struct { const char *w; GtlJsonType t; double v; } lits[] = {
      {"true", GTL_JSON_BOOL, 1}, {"false", GTL_JSON_BOOL, 0}, {"null", GTL_JSON_NULL, 0}};
  for (int k = 0; k < 3; k++) {
    size_t L = strlen(lits[k].w);
    if (p->i + L <= p->n && memcmp(p->s + p->i, lits[k].w, L) == 0) {
      GtlJson *j = node(lits[k].t);
      if (!j) return fail(p, "out of memory");
      j->num = lits[k].v;
      p->i += L;
      return j;
    }
  }
  return fail(p, "unexpected character");
}

GtlJson *gtl_json_parse(const char *text, size_t len, char *err, size_t errlen) {
  Parser p = {text, len, 0, 0, err, errlen};
  if (err && errlen) err[0] = '\0';
  GtlJson *j = parse_value(&p);
  if (!j) return NULL;
  skip_ws(&p);
  if (p.i != p.n) {
    gtl_json_free(j);
    return fail(&p, "trailing characters after the value");
  }
  return j;
}

GtlJson *gtl_json_parse_file(const char *path, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
    return NULL;
  }
  fseek(f, 0, SEEK_END);
  long sz = ftell(f);
  fseek(f, 0, SEEK_SET);
  if (sz < 0 || sz > (1L << 30)) {
    fclose(f);
    snprintf(err, errlen, "%s: unreadable size", path);
    return NULL;
  }
  char *buf = (char *)malloc((size_t)sz + 1);
  size_t got = buf ? fread(buf, 1, (size_t)sz, f) : 0;
  fclose(f);
  if (!buf || got != (size_t)sz) {
    free(buf);
    snprintf(err, errlen, "%s: read failed", path);
    return NULL;
  }
  char e2[200];
  GtlJson *j = gtl_json_parse(buf, (size_t)sz, e2, sizeof e2);
  free(buf);
  if (!j) snprintf(err, errlen, "%s: %s", path, e2);
  return j;
}

void gtl_json_free(GtlJson *j) {
  while (j) {
    GtlJson *next = j->next;
    gtl_json_free(j->child);
    free(j->str);
    free(j->key);
    free(j);
    j = next;
  }
}

const GtlJson *gtl_json_get(const GtlJson *j, const char *key) {
  if (!j || j->type != GTL_JSON_OBJ) return NULL;
  for (const GtlJson *c = j->child; c; c = c->next)
    if (c->key && strcmp(c->key, key) == 0) return c;
  return NULL;
}

const GtlJson *gtl_json_at(const GtlJson *j, size_t i) {
  if (!j || j->type != GTL_JSON_ARR) return NULL;
  const GtlJson *c = j->child;
  while (c && i--) c = c->next;
  return c;
}

double gtl_json_num(const GtlJson *j, const char *key, double dflt) {
  const GtlJson *v = gtl_json_get(j, key);
  return v && v->type == GTL_JSON_NUM ? v->num : dflt;
}

const char *gtl_json_str(const GtlJson *j, const char *key) {
  const GtlJson *v = gtl_json_get(j, key);
  return v && v->type == GTL_JSON_STR ? v->str : NULL;
}

void gtl_json_write_str(FILE *f, const char *s) {
  fputc('"', f);
  for (const unsigned char *c = (const unsigned char *)(s ? s : ""); *c; c++) {
    if (*c == '"' || *c == '\\') fprintf(f, "\\%c", *c);
    else if (*c == '\n') fputs("\\n", f);
    else if (*c == '\t') fputs("\\t", f);
    else if (*c < 0x20) fprintf(f, "\\u%04x", *c);
    else fputc(*c, f);
  }
  fputc('"', f);
}
