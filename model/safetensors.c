/* Safetensors reader (mmap, read-only) and writer.
 *
 * The header is checked the way the reference implementation (the safetensors
 * Rust crate, Metadata::validate) checks it, so that a file it accepts we
 * accept and a file it rejects we reject with a message instead of a crash:
 * header length 0 < N <= 100 MB and 8 + N <= file size; tensors sorted by
 * data_offsets must tile the data area exactly (each begin == previous end, the
 * last end == data area size); each tensor's byte count == dtype size x
 * prod(shape), computed with overflow checks. Every message names the file and,
 * where there is one, the tensor. */
#include "model/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* The Rust crate's MAX_HEADER_SIZE. */
#define ST_MAX_HEADER_BYTES 100000000ull

/* ---- dtypes --------------------------------------------------------------- */

typedef struct {
    const char *name;
    size_t size;
    ltri_dtype dtype;
    int supported;
} st_dtype_info;

/* Every byte-sized safetensors dtype. The sub-byte ones (F4, F6_*) are rejected
 * as unknown: no checkpoint we load uses them. */
static const st_dtype_info st_dtypes[] = {
    {"F32", 4, LTRI_F32, 1},     {"BF16", 2, LTRI_BF16, 1},   {"F16", 2, LTRI_F16, 1},    {"I32", 4, LTRI_I32, 1},
    {"I64", 8, LTRI_I64, 1},     {"F64", 8, LTRI_F32, 0},     {"I8", 1, LTRI_F32, 0},     {"U8", 1, LTRI_F32, 0},
    {"I16", 2, LTRI_F32, 0},     {"U16", 2, LTRI_F32, 0},     {"U32", 4, LTRI_F32, 0},    {"U64", 8, LTRI_F32, 0},
    {"BOOL", 1, LTRI_F32, 0},    {"F8_E4M3", 1, LTRI_F32, 0}, {"F8_E5M2", 1, LTRI_F32, 0}, {"F8_E8M0", 1, LTRI_F32, 0},
};

static const st_dtype_info *st_dtype_lookup(const char *name) {
    for (size_t i = 0; i < sizeof(st_dtypes) / sizeof(st_dtypes[0]); i++)
        if (strcmp(st_dtypes[i].name, name) == 0) return &st_dtypes[i];
    return NULL;
}

static const char *st_json_type_name(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "real";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

static void st_format_shape(char *buf, size_t len, int ndim, const int64_t *shape) {
    size_t n = (size_t)snprintf(buf, len, "[");
    for (int d = 0; d < ndim && n < len; d++)
        n += (size_t)snprintf(buf + n, len - n, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (n < len) snprintf(buf + n, len - n, "]");
}

/* ---- reading one file ----------------------------------------------------- */

/* A tensor while its file is being validated: offsets are kept until the
 * tiling check has run. */
typedef struct {
    st_tensor t;
    uint64_t begin, end;
} st_entry;

static int st_entry_by_offset(const void *a, const void *b) {
    const st_entry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static int st_tensor_by_name(const void *a, const void *b) {
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

/* Reads a non-negative JSON integer. */
static int st_json_uint(const json_t *v, uint64_t *out) {
    if (!json_is_integer(v) || json_integer_value(v) < 0) return -1;
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

/* Fills e from one header entry {"dtype", "shape", "data_offsets"}. */
static int st_parse_entry(st_entry *e, const char *path, const char *name, const json_t *info,
                          uint64_t data_size, ltri_error *err) {
    if (!json_is_object(info))
        return ltri_fail(err, "%s: tensor '%s': header entry must be an object, got %s", path, name,
                         st_json_type_name(info));
    const json_t *dtype = json_object_get(info, "dtype");
    const json_t *shape = json_object_get(info, "shape");
    const json_t *offsets = json_object_get(info, "data_offsets");
    if (!dtype || !shape || !offsets)
        return ltri_fail(err, "%s: tensor '%s': header entry lacks '%s'", path, name,
                         !dtype ? "dtype" : !shape ? "shape" : "data_offsets");
    if (!json_is_string(dtype))
        return ltri_fail(err, "%s: tensor '%s': 'dtype' must be a string, got %s", path, name,
                         st_json_type_name(dtype));
    const st_dtype_info *di = st_dtype_lookup(json_string_value(dtype));
    if (!di) return ltri_fail(err, "%s: tensor '%s': unknown dtype '%s'", path, name, json_string_value(dtype));
    e->t.dtype = di->supported ? di->dtype : (ltri_dtype)-1;
    e->t.dtype_name = di->name;
    e->t.unsupported = !di->supported;

    if (!json_is_array(shape))
        return ltri_fail(err, "%s: tensor '%s': 'shape' must be an array, got %s", path, name,
                         st_json_type_name(shape));
    size_t ndim = json_array_size(shape);
    if (ndim > ST_MAX_DIMS)
        return ltri_fail(err, "%s: tensor '%s': %zu dimensions, at most %d are supported", path, name, ndim,
                         ST_MAX_DIMS);
    e->t.ndim = (int)ndim;
    int empty = 0;
    for (size_t d = 0; d < ndim; d++) {
        uint64_t dim;
        if (st_json_uint(json_array_get(shape, d), &dim) != 0)
            return ltri_fail(err, "%s: tensor '%s': shape[%zu] must be a non-negative integer", path, name, d);
        e->t.shape[d] = (int64_t)dim;
        if (dim == 0) empty = 1;
    }
    char shape_str[256];
    st_format_shape(shape_str, sizeof(shape_str), e->t.ndim, e->t.shape);
    /* nbytes = size x prod(shape), refusing a product that overflows 64 bits
     * (the Rust crate's ValidationOverflow); a zero dimension makes it 0. */
    uint64_t nbytes = empty ? 0 : di->size;
    for (int d = 0; d < e->t.ndim && !empty; d++) {
        uint64_t dim = (uint64_t)e->t.shape[d];
        if (nbytes > UINT64_MAX / dim)
            return ltri_fail(err, "%s: tensor '%s': shape %s overflows the byte count", path, name, shape_str);
        nbytes *= dim;
    }

    if (!json_is_array(offsets) || json_array_size(offsets) != 2 ||
        st_json_uint(json_array_get(offsets, 0), &e->begin) != 0 ||
        st_json_uint(json_array_get(offsets, 1), &e->end) != 0)
        return ltri_fail(err, "%s: tensor '%s': 'data_offsets' must be two non-negative integers", path, name);
    if (e->end < e->begin)
        return ltri_fail(err, "%s: tensor '%s': data_offsets [%llu,%llu] end before they begin", path, name,
                         (unsigned long long)e->begin, (unsigned long long)e->end);
    if (e->end > data_size)
        return ltri_fail(err, "%s: tensor '%s': data_offsets [%llu,%llu] exceed the data area of %llu bytes", path,
                         name, (unsigned long long)e->begin, (unsigned long long)e->end,
                         (unsigned long long)data_size);
    if (e->end - e->begin != nbytes)
        return ltri_fail(err, "%s: tensor '%s': data_offsets [%llu,%llu] hold %llu bytes but dtype %s x shape %s needs %llu",
                         path, name, (unsigned long long)e->begin, (unsigned long long)e->end,
                         (unsigned long long)(e->end - e->begin), di->name, shape_str, (unsigned long long)nbytes);
    e->t.nbytes = (size_t)nbytes;
    return 0;
}

/* Parses and validates the header of a mapped file and returns its tensors in
 * *out (names malloc'ed; data pointers into the mapping). */
static int st_parse_header(const char *path, const unsigned char *base, size_t size, st_entry **out, int *n_out,
                           ltri_error *err) {
    *out = NULL;
    *n_out = 0;
    if (size < 8)
        return ltri_fail(err, "%s: %zu bytes is too short for a safetensors file (8-byte header length + JSON)", path,
                         size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | base[i]; /* little-endian, whatever the host */
    if (n == 0) return ltri_fail(err, "%s: header length is 0", path);
    if (n > ST_MAX_HEADER_BYTES)
        return ltri_fail(err, "%s: header length %llu is over the limit of %llu bytes", path, (unsigned long long)n,
                         ST_MAX_HEADER_BYTES);
    if (n > (uint64_t)size - 8)
        return ltri_fail(err, "%s: header length %llu exceeds the file size %zu - 8 (truncated file?)", path,
                         (unsigned long long)n, size);
    uint64_t data_size = (uint64_t)size - 8 - n;
    const unsigned char *data = base + 8 + n;

    json_error_t jerr;
    json_t *root = json_loadb((const char *)base + 8, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return ltri_fail(err, "%s: header is not valid JSON (line %d, column %d: %s)", path, jerr.line, jerr.column,
                         jerr.text);
    int rc = -1;
    st_entry *entries = NULL;
    int count = 0;
    if (!json_is_object(root)) {
        ltri_fail(err, "%s: header must be a JSON object, got %s", path, st_json_type_name(root));
        goto done;
    }
    entries = calloc(json_object_size(root) + 1, sizeof(*entries));
    if (!entries) {
        ltri_fail(err, "%s: out of memory for %zu header entries", path, json_object_size(root));
        goto done;
    }
    const char *key;
    json_t *value;
    json_object_foreach(root, key, value) {
        if (strcmp(key, "__metadata__") == 0) {
            if (!json_is_object(value)) {
                ltri_fail(err, "%s: '__metadata__' must be an object, got %s", path, st_json_type_name(value));
                goto done;
            }
            continue;
        }
        st_entry *e = &entries[count];
        if (st_parse_entry(e, path, key, value, data_size, err) != 0) goto done;
        e->t.name = strdup(key);
        if (!e->t.name) {
            ltri_fail(err, "%s: out of memory", path);
            goto done;
        }
        e->t.data = data + e->begin;
        count++;
    }
    /* The tiling check: sorted by offset, the tensors cover [0, data_size)
     * with no gap and no overlap. */
    qsort(entries, (size_t)count, sizeof(*entries), st_entry_by_offset);
    uint64_t at = 0;
    for (int i = 0; i < count; i++) {
        const st_entry *e = &entries[i];
        if (e->begin < at) {
            ltri_fail(err, "%s: tensor '%s': data_offsets [%llu,%llu] overlap tensor '%s', which ends at %llu", path,
                      e->t.name, (unsigned long long)e->begin, (unsigned long long)e->end, entries[i - 1].t.name,
                      (unsigned long long)at);
            goto done;
        }
        if (e->begin > at) {
            ltri_fail(err, "%s: tensor '%s': data_offsets [%llu,%llu] leave a gap of %llu bytes after %s%s%s", path,
                      e->t.name, (unsigned long long)e->begin, (unsigned long long)e->end,
                      (unsigned long long)(e->begin - at), i ? "tensor '" : "the start of the data",
                      i ? entries[i - 1].t.name : "", i ? "'" : "");
            goto done;
        }
        at = e->end;
    }
    if (at != data_size) {
        ltri_fail(err, "%s: the tensors cover %llu bytes but the data area has %llu (trailing bytes)", path,
                  (unsigned long long)at, (unsigned long long)data_size);
        goto done;
    }
    rc = 0;
done:
    json_decref(root);
    if (rc != 0 && entries) {
        for (int i = 0; i < count; i++) free(entries[i].t.name);
        free(entries);
        entries = NULL;
        count = 0;
    }
    *out = entries;
    *n_out = count;
    return rc;
}

/* Maps path and appends its tensors to ar (unsorted). The mapping is recorded
 * in ar before anything can fail, so st_close() releases it on every path. */
static int st_add_file(st_archive *ar, const char *path, ltri_error *err) {
    char **paths = realloc(ar->paths, (size_t)(ar->n_files + 1) * sizeof(*paths));
    if (paths) ar->paths = paths;
    void **maps = realloc(ar->maps, (size_t)(ar->n_files + 1) * sizeof(*maps));
    if (maps) ar->maps = maps;
    size_t *sizes = realloc(ar->map_size, (size_t)(ar->n_files + 1) * sizeof(*sizes));
    if (sizes) ar->map_size = sizes;
    if (!paths || !maps || !sizes) return ltri_fail(err, "%s: out of memory", path);
    int file = ar->n_files;
    ar->paths[file] = strdup(path);
    ar->maps[file] = NULL;
    ar->map_size[file] = 0;
    if (!ar->paths[file]) return ltri_fail(err, "%s: out of memory", path);
    ar->n_files++;

    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ltri_fail(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return ltri_fail(err, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return ltri_fail(err, "%s: not a regular file", path);
    }
    size_t size = (size_t)sb.st_size;
    void *base = NULL;
    if (size > 0) {
        base = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (base == MAP_FAILED) {
            int e = errno;
            close(fd);
            return ltri_fail(err, "%s: mmap of %zu bytes failed: %s", path, size, strerror(e));
        }
        ar->maps[file] = base;
        ar->map_size[file] = size;
    }
    if (close(fd) != 0) return ltri_fail(err, "%s: close failed: %s", path, strerror(errno));

    st_entry *entries;
    int count;
    if (st_parse_header(path, base, size, &entries, &count, err) != 0) return -1;
    st_tensor *tensors = realloc(ar->tensors, (size_t)(ar->n_tensors + count + 1) * sizeof(*tensors));
    if (!tensors) {
        for (int i = 0; i < count; i++) free(entries[i].t.name);
        free(entries);
        return ltri_fail(err, "%s: out of memory for %d tensors", path, count);
    }
    ar->tensors = tensors;
    for (int i = 0; i < count; i++) {
        entries[i].t.file = file;
        ar->tensors[ar->n_tensors++] = entries[i].t;
    }
    free(entries);
    return 0;
}

/* Sorts the tensors by name for st_find; a name in two files is an error (we
 * could not say which one the model means). */
static int st_finish(st_archive *ar, ltri_error *err) {
    qsort(ar->tensors, (size_t)ar->n_tensors, sizeof(*ar->tensors), st_tensor_by_name);
    for (int i = 1; i < ar->n_tensors; i++)
        if (strcmp(ar->tensors[i - 1].name, ar->tensors[i].name) == 0)
            return ltri_fail(err, "%s: tensor '%s' is also in %s", st_tensor_path(ar, &ar->tensors[i]),
                             ar->tensors[i].name, st_tensor_path(ar, &ar->tensors[i - 1]));
    return 0;
}

int st_open_file(st_archive *ar, const char *path, ltri_error *err) {
    memset(ar, 0, sizeof(*ar));
    if (st_add_file(ar, path, err) != 0 || st_finish(ar, err) != 0) {
        st_close(ar);
        return -1;
    }
    return 0;
}

/* ---- directories and sharded checkpoints ---------------------------------- */

static int st_join(char *buf, size_t len, const char *dir, const char *name, ltri_error *err) {
    int n = snprintf(buf, len, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= len) return ltri_fail(err, "%s: path too long", dir);
    return 0;
}

static int st_file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* model.safetensors.index.json: {"metadata": {...}, "weight_map": {tensor: shard}}.
 * Each distinct shard is opened once; each tensor must be in the shard named. */
static int st_open_index(st_archive *ar, const char *dir, const char *index_path, ltri_error *err) {
    json_error_t jerr;
    json_t *root = json_load_file(index_path, 0, &jerr);
    if (!root) {
        if (jerr.line < 0) return ltri_fail(err, "%s: %s", index_path, jerr.text);
        return ltri_fail(err, "%s: invalid JSON (line %d, column %d: %s)", index_path, jerr.line, jerr.column,
                         jerr.text);
    }
    int rc = -1;
    json_t *shard_file = json_object(); /* shard name -> file index in ar */
    const json_t *map = json_object_get(root, "weight_map");
    if (!shard_file) {
        ltri_fail(err, "%s: out of memory", index_path);
        goto done;
    }
    if (!json_is_object(map)) {
        ltri_fail(err, "%s: 'weight_map' must be an object, got %s", index_path,
                  map ? st_json_type_name(map) : "nothing");
        goto done;
    }
    const char *tensor;
    json_t *shard;
    json_object_foreach((json_t *)map, tensor, shard) {
        if (!json_is_string(shard)) {
            ltri_fail(err, "%s: tensor '%s': shard must be a string, got %s", index_path, tensor,
                      st_json_type_name(shard));
            goto done;
        }
        const char *name = json_string_value(shard);
        /* The shard must sit in dir: a name that could climb out of it (a
         * '/', a '..') is refused rather than followed. */
        if (name[0] == '\0' || strchr(name, '/') || strchr(name, '\\') || strstr(name, "..")) {
            ltri_fail(err, "%s: tensor '%s': shard name '%s' is not a plain file name in the directory", index_path,
                      tensor, name);
            goto done;
        }
        if (json_object_get(shard_file, name)) continue;
        char path[4096];
        if (st_join(path, sizeof(path), dir, name, err) != 0) goto done;
        if (st_add_file(ar, path, err) != 0) {
            ltri_fail_prefix(err, "%s names shard '%s': ", index_path, name);
            goto done;
        }
        if (json_object_set_new(shard_file, name, json_integer(ar->n_files - 1)) != 0) {
            ltri_fail(err, "%s: out of memory", index_path);
            goto done;
        }
    }
    if (st_finish(ar, err) != 0) goto done;
    json_object_foreach((json_t *)map, tensor, shard) {
        const char *name = json_string_value(shard);
        int file = (int)json_integer_value(json_object_get(shard_file, name));
        const st_tensor *t = st_find(ar, tensor);
        if (!t) {
            ltri_fail(err, "%s: tensor '%s' is mapped to shard '%s', which has no such tensor", index_path, tensor,
                      name);
            goto done;
        }
        if (t->file != file) {
            ltri_fail(err, "%s: tensor '%s' is mapped to shard '%s', which has no such tensor (it is in %s)",
                      index_path, tensor, name, st_tensor_path(ar, t));
            goto done;
        }
    }
    rc = 0;
done:
    json_decref(shard_file);
    json_decref(root);
    return rc;
}

int st_open_dir(st_archive *ar, const char *dir, ltri_error *err) {
    memset(ar, 0, sizeof(*ar));
    char path[4096];
    if (st_join(path, sizeof(path), dir, "model.safetensors.index.json", err) != 0) return -1;
    if (st_file_exists(path)) {
        if (st_open_index(ar, dir, path, err) != 0) {
            st_close(ar);
            return -1;
        }
        return 0;
    }
    if (st_join(path, sizeof(path), dir, "model.safetensors", err) != 0) return -1;
    if (st_file_exists(path)) return st_open_file(ar, path, err);
    return ltri_fail(err, "%s: no model.safetensors or model.safetensors.index.json", dir);
}

const st_tensor *st_find(const st_archive *ar, const char *name) {
    if (!ar->tensors) return NULL;
    st_tensor key;
    memset(&key, 0, sizeof(key));
    key.name = (char *)name;
    return bsearch(&key, ar->tensors, (size_t)ar->n_tensors, sizeof(*ar->tensors), st_tensor_by_name);
}

const char *st_tensor_path(const st_archive *ar, const st_tensor *t) {
    if (!t || t->file < 0 || t->file >= ar->n_files) return "?";
    return ar->paths[t->file];
}

void st_close(st_archive *ar) {
    for (int i = 0; i < ar->n_tensors; i++) free(ar->tensors[i].name);
    free(ar->tensors);
    for (int i = 0; i < ar->n_files; i++) {
        if (ar->maps && ar->maps[i]) munmap(ar->maps[i], ar->map_size[i]);
        if (ar->paths) free(ar->paths[i]);
    }
    free(ar->paths);
    free(ar->maps);
    free(ar->map_size);
    memset(ar, 0, sizeof(*ar));
}

/* ---- writing -------------------------------------------------------------- */

/* Builds the header JSON: "__metadata__" first, then the tensors in the given
 * order with consecutive offsets (jansson keeps insertion order). */
static json_t *st_build_header(const char *path, int n, const char *const *names, const ltri_dtype *dtypes,
                               const int *ndims, const int64_t *const *shapes, size_t *nbytes, ltri_error *err) {
    json_t *root = json_object();
    json_t *meta = json_pack("{s:s}", "format", "pt");
    if (!root || !meta || json_object_set_new(root, "__metadata__", meta) != 0) {
        json_decref(root);
        ltri_fail(err, "%s: out of memory", path);
        return NULL;
    }
    uint64_t offset = 0;
    for (int i = 0; i < n; i++) {
        size_t esize = ltri_dtype_size(dtypes[i]);
        if (!names[i] || esize == 0 || ndims[i] < 0 || ndims[i] > ST_MAX_DIMS || (ndims[i] > 0 && !shapes[i])) {
            ltri_fail(err, "%s: tensor %d ('%s'): invalid name, dtype or rank", path, i, names[i] ? names[i] : "");
            goto fail;
        }
        if (strcmp(names[i], "__metadata__") == 0 || json_object_get(root, names[i])) {
            ltri_fail(err, "%s: tensor '%s' given twice (or reserved name)", path, names[i]);
            goto fail;
        }
        uint64_t bytes = esize;
        json_t *shape = json_array();
        if (!shape) goto oom;
        for (int d = 0; d < ndims[i]; d++) {
            if (shapes[i][d] < 0 || (shapes[i][d] > 0 && bytes > UINT64_MAX / (uint64_t)shapes[i][d])) {
                json_decref(shape);
                ltri_fail(err, "%s: tensor '%s': invalid shape", path, names[i]);
                goto fail;
            }
            bytes *= (uint64_t)shapes[i][d];
            if (json_array_append_new(shape, json_integer(shapes[i][d])) != 0) {
                json_decref(shape);
                goto oom;
            }
        }
        nbytes[i] = (size_t)bytes;
        json_t *info = json_pack("{s:s,s:o,s:[I,I]}", "dtype", ltri_dtype_name(dtypes[i]), "shape", shape,
                                 "data_offsets", (json_int_t)offset, (json_int_t)(offset + bytes));
        if (!info || json_object_set_new(root, names[i], info) != 0) goto oom;
        offset += bytes;
    }
    return root;
oom:
    ltri_fail(err, "%s: out of memory", path);
fail:
    json_decref(root);
    return NULL;
}

int st_write_file(const char *path, int n, const char *const *names, const ltri_dtype *dtypes, const int *ndims,
                  const int64_t *const *shapes, const void *const *data, ltri_error *err) {
    if (n < 0) return ltri_fail(err, "%s: negative tensor count %d", path, n);
    size_t *nbytes = calloc((size_t)n + 1, sizeof(*nbytes));
    if (!nbytes) return ltri_fail(err, "%s: out of memory", path);
    json_t *root = st_build_header(path, n, names, dtypes, ndims, shapes, nbytes, err);
    if (!root) {
        free(nbytes);
        return -1;
    }
    char *header = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (!header) {
        free(nbytes);
        return ltri_fail(err, "%s: could not serialise the header", path);
    }
    /* Like the Python library: pad the header with spaces so that the data
     * area starts 8-byte aligned. */
    size_t hlen = strlen(header);
    size_t padded = (hlen + 7) / 8 * 8;
    unsigned char len_bytes[8];
    for (int i = 0; i < 8; i++) len_bytes[i] = (unsigned char)((uint64_t)padded >> (8 * i));

    char tmp[4096];
    int rc = -1;
    FILE *f = NULL;
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
        ltri_fail(err, "%s: path too long", path);
        goto done;
    }
    f = fopen(tmp, "wb");
    if (!f) {
        ltri_fail(err, "%s: cannot create: %s", tmp, strerror(errno));
        goto done;
    }
    errno = 0;
    int ok = fwrite(len_bytes, 1, 8, f) == 8 && fwrite(header, 1, hlen, f) == hlen;
    for (size_t i = hlen; ok && i < padded; i++) ok = fputc(' ', f) != EOF;
    for (int i = 0; ok && i < n; i++)
        if (nbytes[i] > 0) ok = data && data[i] && fwrite(data[i], 1, nbytes[i], f) == nbytes[i];
    if (!ok || fflush(f) != 0 || fsync(fileno(f)) != 0) {
        ltri_fail(err, "%s: write failed: %s", tmp, errno ? strerror(errno) : "missing tensor data");
        goto done;
    }
    int closed = fclose(f);
    f = NULL;
    if (closed != 0) {
        ltri_fail(err, "%s: close failed: %s", tmp, strerror(errno));
        goto done;
    }
    if (rename(tmp, path) != 0) {
        ltri_fail(err, "%s: rename to %s failed: %s", tmp, path, strerror(errno));
        goto done;
    }
    rc = 0;
done:
    if (f) fclose(f);
    if (rc != 0) unlink(tmp);
    free(header);
    free(nbytes);
    return rc;
}
