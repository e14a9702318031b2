/* safetensors.h — read and write the safetensors checkpoint format (Hugging Face,
 * github.com/huggingface/safetensors, README "Format"; validation rules as in its
 * reference reader, safetensors/src/tensor.rs, SafeTensors::read_metadata and
 * Metadata::validate):
 *
 *   bytes [0, 8)          N: the header length, unsigned 64-bit little-endian
 *   bytes [8, 8+N)        a UTF-8 JSON object: tensor name → {"dtype": "BF16",
 *                         "shape": [d0, d1, …], "data_offsets": [begin, end]}, and an
 *                         optional "__metadata__": {string: string}. Writers pad it with
 *                         spaces so the byte buffer starts 8-byte aligned.
 *   bytes [8+N, size)     the byte buffer. A tensor's bytes are [begin, end) relative to
 *                         its start, row-major, little-endian.
 *
 * A valid file's tensors tile the byte buffer exactly: sorted by offset, the first
 * begins at 0, each begins where the previous ended (no overlap, no hole), the last ends
 * at the end of the file; end − begin = product(shape) · dtype size (a shape of [] is a
 * scalar, a zero in the shape an empty tensor). Headers over 100,000,000 bytes are
 * refused, as the reference reader does.
 *
 * Every failure is reported as one line naming what was wrong, where: the tensor and
 * field ('tensor "w": data_offsets: …'), or the file byte offset for the length prefix
 * and malformed JSON. The parser never reads outside the buffer it is given.
 * Pure C11 (stdio only), unit-tested without a GPU (tests/test_safetensors.c). */
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The element types of the format, by the names the header uses. */
typedef enum {
  GTL_ST_BOOL, GTL_ST_U8, GTL_ST_I8, GTL_ST_I16, GTL_ST_U16, GTL_ST_F16, GTL_ST_BF16,
  GTL_ST_I32, GTL_ST_U32, GTL_ST_F32, GTL_ST_F64, GTL_ST_I64, GTL_ST_U64, GTL_ST_F8_E4M3,
  GTL_ST_F8_E5M2, GTL_ST_DTYPE_COUNT
} GtlStDtype;

#define GTL_ST_MAX_DIMS 8                    /* shapes of more dims are refused */
#define GTL_ST_MAX_HEADER 100000000ull       /* the reference reader's MAX_HEADER_SIZE */

/* One tensor. Reading fills every field; writing takes name, dtype, ndim, shape and
 * fills begin and end. */
typedef struct {
  const char *name;                 /* reading: owned by the GtlSafetensors */
  GtlStDtype dtype;
  int ndim;                         /* 0 (scalar) … GTL_ST_MAX_DIMS */
  uint64_t shape[GTL_ST_MAX_DIMS];  /* elements per dim, outermost first */
  uint64_t begin, end;              /* byte range in the byte buffer, end exclusive */
} GtlStTensor;

/* A parsed header. */
typedef struct {
  uint64_t header_len;    /* N */
  uint64_t data_offset;   /* 8 + N: file offset of the byte buffer */
  uint64_t data_len;      /* bytes in the byte buffer (file size − data_offset) */
  size_t n_tensors;
  GtlStTensor *tensors;   /* sorted by begin: the order of their bytes in the file */
  size_t *by_name;        /* tensors[by_name[i]] in strcmp order of name (for lookup) */
  size_t n_meta;
  const char **meta_key, **meta_val; /* "__metadata__" entries, in header order */
  char *strings;          /* one block holding every name, key and value */
} GtlSafetensors;

/** Bytes per element of d (BOOL, U8, I8, F8_* 1; I16, U16, F16, BF16 2; I32, U32,
 *  F32 4; F64, I64, U64 8); 0 for an invalid d. */
size_t gtl_st_dtype_size(GtlStDtype d);
/** The header's name of d ("BF16", "F8_E4M3", …); "?" for an invalid d. */
const char *gtl_st_dtype_name(GtlStDtype d);
/** d for a header name (exact, case-sensitive). Returns 0, or -1 when unknown. */
int gtl_st_dtype_from_name(const char *name, GtlStDtype *d);

/** Elements of t: the product of its shape (1 for a scalar). */
uint64_t gtl_st_numel(const GtlStTensor *t);

/** Parse a safetensors file from its first buf_len bytes (buf starts at file offset 0;
 *  it must hold at least the 8 + N header bytes, the byte buffer need not be there).
 *  file_size is the whole file's size in bytes: the tensors are checked against it.
 *  On success returns 0 and fills st (free with gtl_st_free). On failure returns -1,
 *  leaves st empty (safe to gtl_st_free) and writes one line in err[errlen]:
 *  truncated file (< 8 bytes), header length past the end of the file or over the
 *  limit, buffer shorter than the header, invalid UTF-8, malformed JSON (with the file
 *  byte offset), root not an object, bad "__metadata__", per tensor a missing or
 *  invalid dtype / shape / data_offsets, an unknown dtype, offsets out of range, byte
 *  length != numel · dtype size, overlapping tensors, a hole, trailing bytes, a
 *  duplicate name. */
int gtl_st_parse(const void *buf, size_t buf_len, uint64_t file_size, GtlSafetensors *st,
                 char *err, size_t errlen);

/** Open `path`, read its length prefix and header, and gtl_st_parse them. Same returns;
 *  open/read failures are reported with the path and strerror. */
int gtl_st_open(const char *path, GtlSafetensors *st, char *err, size_t errlen);

/** The tensor called name, or NULL (binary search over by_name). */
const GtlStTensor *gtl_st_find(const GtlSafetensors *st, const char *name);
/** The "__metadata__" value for key, or NULL. */
const char *gtl_st_meta(const GtlSafetensors *st, const char *key);
/** Release what gtl_st_parse allocated; st is left empty. */
void gtl_st_free(GtlSafetensors *st);

/** Build the header for n tensors laid out back to back in the given order: sets
 *  t[i].begin/end, and returns a malloc'd block of *out_len = 8 + N bytes (the length
 *  prefix and the JSON, space-padded so 8 + N is a multiple of 8) to write at file
 *  offset 0, followed by the tensors' bytes in order. meta holds n_meta (key, value)
 *  pairs as meta[2i], meta[2i+1] (NULL when n_meta is 0). Returns NULL with the reason
 *  in err for an empty or duplicate name, the name "__metadata__", an invalid dtype,
 *  ndim outside [0, GTL_ST_MAX_DIMS], or a size that overflows 64 bits. */
unsigned char *gtl_st_header_build(GtlStTensor *t, size_t n, const char *const *meta,
                                   size_t n_meta, size_t *out_len, char *err, size_t errlen);

/** Write a whole file from memory: the header of gtl_st_header_build, then data[i]
 *  (t[i].end − t[i].begin bytes each) for every tensor. Returns 0, or -1 with the reason
 *  (header error, or the path and strerror of a failed open/write/close) in err. */
int gtl_st_write(const char *path, GtlStTensor *t, const void *const *data, size_t n,
                 const char *const *meta, size_t n_meta, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
