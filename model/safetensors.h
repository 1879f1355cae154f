/* Safetensors checkpoints, memory-mapped.
 *
 * Format (huggingface/safetensors): 8 bytes little-endian header length N, then N
 * bytes of JSON {"name": {"dtype", "shape", "data_offsets": [begin, end]}, ...,
 * "__metadata__": {...}}, then the data. Offsets are relative to the data area.
 * Every header is checked before use: offsets inside the file, tensors not
 * overlapping, byte size == dtype size x shape, known dtype. A header that lies
 * is reported with the file name and the tensor, never read past. */
#ifndef LTRI_MODEL_SAFETENSORS_H
#define LTRI_MODEL_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/error.h"

#define ST_MAX_DIMS 8

typedef struct {
    char *name;
    ltri_dtype dtype;       /* meaningful only when !unsupported */
    const char *dtype_name; /* as in the header ("BF16", "F8_E4M3"); static storage */
    /* 1: a valid safetensors dtype (F64, I8, U8, I16, U16, U32, U64, BOOL, F8_*)
     * that ltri does not compute with. The header still validates, and only a
     * model that needs the tensor fails (model_open names it). */
    int unsupported;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data; /* inside the mapping */
    size_t nbytes;
    int file; /* index into st_archive.paths */
} st_tensor;

typedef struct {
    int n_files;
    char **paths;     /* file paths, for messages */
    void **maps;      /* mmap base of each file */
    size_t *map_size; /* size of each mapping */
    int n_tensors;
    st_tensor *tensors; /* sorted by name */
} st_archive;

/* Opens one .safetensors file. */
int st_open_file(st_archive *ar, const char *path, ltri_error *err);

/* Opens a model directory: model.safetensors.index.json (sharded) if present,
 * else model.safetensors. Every tensor named by the index must be found in the
 * shard the index names. */
int st_open_dir(st_archive *ar, const char *dir, ltri_error *err);

/* NULL when absent. */
const st_tensor *st_find(const st_archive *ar, const char *name);

/* The file a tensor came from, for messages. */
const char *st_tensor_path(const st_archive *ar, const st_tensor *t);

void st_close(st_archive *ar);

/* Writes a safetensors file (used by tests and tools). names/dtypes/shapes/data
 * describe n tensors; shapes[i] has ndims[i] entries. Written to path + ".tmp"
 * then renamed, so a crash never leaves a half file under the final name. */
int st_write_file(const char *path, int n, const char *const *names, const ltri_dtype *dtypes,
                  const int *ndims, const int64_t *const *shapes, const void *const *data, ltri_error *err);

#endif
