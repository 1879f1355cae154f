/* Safetensors: round trip through st_write_file/st_open_file, headers that lie
 * (every one must be refused with a message naming the file and, where there
 * is one, the tensor, and must not read out of bounds: run under valgrind),
 * and sharded directories with model.safetensors.index.json. */
/* nftw() is an X/Open interface. */
#define _XOPEN_SOURCE 700
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/safetensors.h"
#include "test_util.h"

/* ---- helpers --------------------------------------------------------------- */

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static void path_join(char *buf, size_t len, const char *dir, const char *name) {
    snprintf(buf, len, "%s/%s", dir, name);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    CHECK_MSG(f != NULL, "cannot create %s", path);
    if (!f) return;
    CHECK(fwrite(text, 1, strlen(text), f) == strlen(text));
    CHECK(fclose(f) == 0);
}

/* A file with an arbitrary header: header_len is what the 8-byte prefix
 * claims (it may lie), then the header text, then data_len bytes of data. */
static void write_raw(const char *path, uint64_t header_len, const char *header, size_t data_len) {
    FILE *f = fopen(path, "wb");
    CHECK_MSG(f != NULL, "cannot create %s", path);
    if (!f) return;
    unsigned char len_bytes[8];
    for (int i = 0; i < 8; i++) len_bytes[i] = (unsigned char)(header_len >> (8 * i));
    CHECK(fwrite(len_bytes, 1, 8, f) == 8);
    CHECK(fwrite(header, 1, strlen(header), f) == strlen(header));
    for (size_t i = 0; i < data_len; i++) CHECK(fputc((int)(i & 0xff), f) != EOF);
    CHECK(fclose(f) == 0);
}

/* Writes a file whose prefix tells the true header length. */
static void write_header(const char *path, const char *header, size_t data_len) {
    write_raw(path, strlen(header), header, data_len);
}

/* st_open_file must fail, with a message naming the file and containing want. */
static void expect_file_error(const char *path, const char *want, const char *what) {
    st_archive ar;
    ltri_error err = {{0}};
    int rc = st_open_file(&ar, path, &err);
    CHECK_MSG(rc == -1, "%s: opened a bad file", what);
    CHECK_MSG(strstr(err.msg, path) != NULL, "%s: message does not name the file: %s", what, err.msg);
    CHECK_MSG(strstr(err.msg, want) != NULL, "%s: message lacks '%s': %s", what, want, err.msg);
    CHECK_MSG(ar.n_tensors == 0 && ar.tensors == NULL && ar.maps == NULL, "%s: archive not cleaned up", what);
    st_close(&ar); /* must be harmless after a failed open */
}

static void expect_dir_error(const char *dir, const char *want1, const char *want2, const char *what) {
    st_archive ar;
    ltri_error err = {{0}};
    int rc = st_open_dir(&ar, dir, &err);
    CHECK_MSG(rc == -1, "%s: opened a bad directory", what);
    CHECK_MSG(strstr(err.msg, want1) != NULL, "%s: message lacks '%s': %s", what, want1, err.msg);
    CHECK_MSG(!want2 || strstr(err.msg, want2) != NULL, "%s: message lacks '%s': %s", what, want2, err.msg);
    st_close(&ar);
}

/* ---- round trip ------------------------------------------------------------ */

static void test_round_trip(const char *dir, ltri_rng *rng) {
    char path[512];
    path_join(path, sizeof(path), dir, "round_trip.safetensors");
    /* Deliberately not in name order: the file keeps this order, the archive
     * sorts by name. */
    const char *names[] = {"z.f32_3d", "a.bf16", "m.f16_empty", "scalar", "i32", "i64"};
    const ltri_dtype dtypes[] = {LTRI_F32, LTRI_BF16, LTRI_F16, LTRI_F32, LTRI_I32, LTRI_I64};
    const int ndims[] = {3, 2, 2, 0, 1, 2};
    const int64_t s0[] = {2, 3, 5}, s1[] = {7, 3}, s2[] = {0, 5}, s4[] = {9}, s5[] = {2, 2};
    const int64_t *shapes[] = {s0, s1, s2, NULL, s4, s5};
    const size_t counts[] = {30, 21, 0, 1, 9, 4};
    enum { N = 6 };
    unsigned char *buf[N];
    const void *data[N];
    size_t total = 0;
    for (int i = 0; i < N; i++) {
        size_t bytes = counts[i] * ltri_dtype_size(dtypes[i]);
        buf[i] = malloc(bytes + 1);
        for (size_t b = 0; b < bytes; b++) buf[i][b] = (unsigned char)ltri_rng_u32(rng);
        data[i] = buf[i];
        total += bytes;
    }
    ltri_error err = {{0}};
    int rc = st_write_file(path, N, names, dtypes, ndims, shapes, data, &err);
    CHECK_MSG(rc == 0, "st_write_file: %s", err.msg);

    char tmp[600];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    CHECK_MSG(access(tmp, F_OK) != 0, "%s left behind", tmp);

    /* The layout the Python library writes: header padded to 8 bytes. */
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    if (f) {
        unsigned char len_bytes[8];
        CHECK(fread(len_bytes, 1, 8, f) == 8);
        uint64_t n = 0;
        for (int i = 7; i >= 0; i--) n = (n << 8) | len_bytes[i];
        CHECK_MSG(n % 8 == 0, "header length %llu is not a multiple of 8", (unsigned long long)n);
        CHECK(fseek(f, 0, SEEK_END) == 0);
        CHECK_MSG((uint64_t)ftell(f) == 8 + n + total, "file size %ld != 8 + %llu + %zu", ftell(f),
                  (unsigned long long)n, total);
        fclose(f);
    }

    st_archive ar;
    rc = st_open_file(&ar, path, &err);
    CHECK_MSG(rc == 0, "st_open_file: %s", err.msg);
    if (rc != 0) goto out;
    CHECK(ar.n_files == 1 && ar.n_tensors == N);
    for (int i = 1; i < ar.n_tensors; i++) CHECK(strcmp(ar.tensors[i - 1].name, ar.tensors[i].name) < 0);
    for (int i = 0; i < N; i++) {
        const st_tensor *t = st_find(&ar, names[i]);
        CHECK_MSG(t != NULL, "tensor %s not found", names[i]);
        if (!t) continue;
        CHECK(t->name != names[i] && strcmp(t->name, names[i]) == 0);
        CHECK(t->dtype == dtypes[i] && !t->unsupported);
        CHECK(strcmp(t->dtype_name, ltri_dtype_name(dtypes[i])) == 0);
        CHECK(t->ndim == ndims[i]);
        for (int d = 0; d < ndims[i]; d++) CHECK(t->shape[d] == shapes[i][d]);
        CHECK(t->nbytes == counts[i] * ltri_dtype_size(dtypes[i]));
        CHECK_MSG(t->nbytes == 0 || memcmp(t->data, buf[i], t->nbytes) == 0, "tensor %s data differ", names[i]);
        CHECK(strcmp(st_tensor_path(&ar, t), path) == 0);
    }
    CHECK(st_find(&ar, "missing") == NULL);
    CHECK(st_find(&ar, "") == NULL);
    st_close(&ar);
    CHECK(ar.n_tensors == 0 && ar.tensors == NULL);
    st_close(&ar); /* twice is harmless */
out:
    for (int i = 0; i < N; i++) free(buf[i]);
}

/* Valid safetensors dtypes ltri does not compute with still validate; they are
 * marked, not refused. */
static void test_unsupported_dtypes(const char *dir) {
    char path[512];
    path_join(path, sizeof(path), dir, "unsupported.safetensors");
    write_header(path,
                 "{\"__metadata__\":{\"format\":\"pt\"},"
                 "\"d\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]},"
                 "\"f8\":{\"dtype\":\"F8_E4M3\",\"shape\":[3],\"data_offsets\":[16,19]},"
                 "\"b\":{\"dtype\":\"BOOL\",\"shape\":[1],\"data_offsets\":[19,20]},"
                 "\"u\":{\"dtype\":\"U16\",\"shape\":[2],\"data_offsets\":[20,24]}}",
                 24);
    st_archive ar;
    ltri_error err = {{0}};
    int rc = st_open_file(&ar, path, &err);
    CHECK_MSG(rc == 0, "unsupported dtypes: %s", err.msg);
    if (rc != 0) return;
    CHECK(ar.n_tensors == 4);
    const st_tensor *d = st_find(&ar, "d"), *f8 = st_find(&ar, "f8"), *u = st_find(&ar, "u");
    CHECK(d && d->unsupported && strcmp(d->dtype_name, "F64") == 0 && d->nbytes == 16);
    CHECK(f8 && f8->unsupported && strcmp(f8->dtype_name, "F8_E4M3") == 0 && f8->nbytes == 3);
    CHECK(u && u->unsupported && u->nbytes == 4);
    st_close(&ar);

    /* A wrong byte count for an unsupported dtype is still caught. */
    write_header(path, "{\"d\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
    expect_file_error(path, "needs 16", "F64 size");
}

/* ---- headers that lie ------------------------------------------------------ */

static void test_bad_headers(const char *dir) {
    char path[512];
    path_join(path, sizeof(path), dir, "bad.safetensors");

    write_header(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4);
    expect_file_error(path, "tensor 'a': data_offsets [0,8] exceed the data area of 4 bytes", "past the data");

    write_header(path,
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                 12);
    expect_file_error(path, "tensor 'b': data_offsets [4,12] overlap tensor 'a'", "overlap");

    write_header(path,
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}",
                 20);
    expect_file_error(path, "tensor 'b': data_offsets [12,20] leave a gap", "gap");

    write_header(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8);
    expect_file_error(path, "tensor 'a': data_offsets [0,8] hold 8 bytes but dtype F32 x shape [3] needs 12",
                      "size != dtype x shape");

    write_raw(path, 4096, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    expect_file_error(path, "header length 4096 exceeds the file size", "header length > file");

    write_raw(path, 0, "", 16);
    expect_file_error(path, "header length is 0", "header length 0");

    write_raw(path, 200000000ull, "{}", 0);
    expect_file_error(path, "over the limit", "header length > 100 MB");

    write_text(path, "abc");
    expect_file_error(path, "too short", "3-byte file");

    write_header(path, "{\"a\": {\"dtype\": ", 0);
    expect_file_error(path, "not valid JSON", "invalid JSON");

    write_header(path, "[1, 2]", 0);
    expect_file_error(path, "must be a JSON object", "header is an array");

    write_header(path, "{\"a\":{\"dtype\":\"Q7\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    expect_file_error(path, "tensor 'a': unknown dtype 'Q7'", "unknown dtype");

    write_header(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4);
    expect_file_error(path, "tensor 'a': shape[0] must be a non-negative integer", "negative dim");

    write_header(path, "{\"a\":{\"dtype\":5,\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    expect_file_error(path, "tensor 'a': 'dtype' must be a string, got integer", "dtype not a string");

    write_header(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4);
    expect_file_error(path, "tensor 'a': header entry lacks 'data_offsets'", "no offsets");

    write_header(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4);
    expect_file_error(path, "tensor 'a'", "end before begin");

    write_header(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{}}", 4);
    expect_file_error(path, "not valid JSON", "duplicate name");

    write_header(path,
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4611686018427387904],"
                 "\"data_offsets\":[0,4]}}",
                 4);
    expect_file_error(path, "tensor 'a': shape [4611686018427387904, 4611686018427387904] overflows",
                      "shape overflow");

    write_header(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4);
    expect_file_error(path, "tensor 'a': 9 dimensions", "too many dims");

    write_header(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 6);
    expect_file_error(path, "the tensors cover 4 bytes but the data area has 6", "trailing bytes");

    write_header(path, "{\"__metadata__\":[],\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    expect_file_error(path, "'__metadata__' must be an object", "metadata not an object");

    path_join(path, sizeof(path), dir, "does_not_exist.safetensors");
    expect_file_error(path, "cannot open", "missing file");
}

/* A file cut short (an interrupted download): its last tensor runs past the
 * end. */
static void test_truncated(const char *dir) {
    char path[512];
    path_join(path, sizeof(path), dir, "truncated.safetensors");
    const char *names[] = {"w1", "w2"};
    const ltri_dtype dtypes[] = {LTRI_F32, LTRI_F32};
    const int ndims[] = {2, 2};
    const int64_t shape[] = {4, 4};
    const int64_t *shapes[] = {shape, shape};
    float values[16] = {0};
    const void *data[] = {values, values};
    ltri_error err = {{0}};
    CHECK_MSG(st_write_file(path, 2, names, dtypes, ndims, shapes, data, &err) == 0, "%s", err.msg);
    FILE *f = fopen(path, "rb");
    CHECK(f && fseek(f, 0, SEEK_END) == 0);
    long size = f ? ftell(f) : 0;
    if (f) fclose(f);
    CHECK(truncate(path, size - 10) == 0);
    expect_file_error(path, "tensor 'w2': data_offsets [64,128] exceed the data area of 118 bytes", "truncated");
}

/* ---- sharded directories --------------------------------------------------- */

static void write_shard(const char *dir, const char *file, int n, const char *const *names) {
    char path[512];
    path_join(path, sizeof(path), dir, file);
    ltri_dtype dtypes[4];
    int ndims[4];
    const int64_t shape[] = {3};
    const int64_t *shapes[4];
    float values[3] = {1, 2, 3};
    const void *data[4];
    for (int i = 0; i < n; i++) dtypes[i] = LTRI_F32, ndims[i] = 1, shapes[i] = shape, data[i] = values;
    ltri_error err = {{0}};
    CHECK_MSG(st_write_file(path, n, names, dtypes, ndims, shapes, data, &err) == 0, "%s", err.msg);
}

static void test_sharded(const char *dir) {
    char index[512];
    path_join(index, sizeof(index), dir, "model.safetensors.index.json");

    /* Neither file yet. */
    expect_dir_error(dir, dir, "no model.safetensors or model.safetensors.index.json", "empty dir");

    const char *shard1[] = {"a", "b"}, *shard2[] = {"c"};
    write_shard(dir, "model-00001-of-00002.safetensors", 2, shard1);
    write_shard(dir, "model-00002-of-00002.safetensors", 1, shard2);
    write_text(index, "{\"metadata\": {\"total_size\": 36}, \"weight_map\": {"
                      "\"a\": \"model-00001-of-00002.safetensors\", \"b\": \"model-00001-of-00002.safetensors\", "
                      "\"c\": \"model-00002-of-00002.safetensors\"}}");
    st_archive ar;
    ltri_error err = {{0}};
    int rc = st_open_dir(&ar, dir, &err);
    CHECK_MSG(rc == 0, "good index: %s", err.msg);
    if (rc == 0) {
        CHECK(ar.n_files == 2 && ar.n_tensors == 3);
        const st_tensor *a = st_find(&ar, "a"), *c = st_find(&ar, "c");
        CHECK(a && strstr(st_tensor_path(&ar, a), "model-00001-of-00002.safetensors"));
        CHECK(c && strstr(st_tensor_path(&ar, c), "model-00002-of-00002.safetensors"));
        CHECK(c && c->nbytes == 12 && ((const float *)c->data)[2] == 3.0f);
        st_close(&ar);
    }

    write_text(index, "{\"weight_map\": {\"a\": \"model-00001-of-00002.safetensors\", "
                      "\"c\": \"model-00003-of-00003.safetensors\"}}");
    expect_dir_error(dir, "model-00003-of-00003.safetensors", "model.safetensors.index.json", "missing shard");

    write_text(index, "{\"weight_map\": {\"a\": \"model-00001-of-00002.safetensors\", "
                      "\"d\": \"model-00001-of-00002.safetensors\"}}");
    expect_dir_error(dir, "tensor 'd' is mapped to shard 'model-00001-of-00002.safetensors'",
                     "model.safetensors.index.json", "tensor not in its shard");

    write_text(index, "{\"weight_map\": {\"a\": \"model-00001-of-00002.safetensors\", "
                      "\"b\": \"model-00002-of-00002.safetensors\"}}");
    expect_dir_error(dir, "tensor 'b' is mapped to shard 'model-00002-of-00002.safetensors'",
                     "(it is in ", "tensor in the other shard");

    write_text(index, "{\"weight_map\": {\"a\": \"../evil.safetensors\"}}");
    expect_dir_error(dir, "'../evil.safetensors'", "model.safetensors.index.json", "path traversal");

    write_text(index, "{\"weight_map\": {\"a\": \"sub/x.safetensors\"}}");
    expect_dir_error(dir, "'sub/x.safetensors'", "model.safetensors.index.json", "shard in a subdirectory");

    write_text(index, "{\"weight_map\": [1, 2]}");
    expect_dir_error(dir, "'weight_map' must be an object", "model.safetensors.index.json", "weight_map array");

    write_text(index, "{\"weight_map\": ");
    expect_dir_error(dir, "line 1", "model.safetensors.index.json", "index invalid JSON");

    /* The same tensor in two shards: ambiguous. */
    const char *shard3[] = {"a"};
    write_shard(dir, "model-00002-of-00002.safetensors", 1, shard3);
    write_text(index, "{\"weight_map\": {\"a\": \"model-00001-of-00002.safetensors\", "
                      "\"b\": \"model-00002-of-00002.safetensors\"}}");
    expect_dir_error(dir, "tensor 'a' is also in", "model-0000", "duplicate across shards");

    /* Without an index: model.safetensors. */
    CHECK(remove(index) == 0);
    const char *single[] = {"x"};
    write_shard(dir, "model.safetensors", 1, single);
    rc = st_open_dir(&ar, dir, &err);
    CHECK_MSG(rc == 0, "single file: %s", err.msg);
    if (rc == 0) {
        CHECK(ar.n_files == 1 && st_find(&ar, "x") != NULL && st_find(&ar, "a") == NULL);
        st_close(&ar);
    }
}

int main(void) {
    ltri_rng rng;
    ltri_rng_seed(&rng, test_seed(20240611));
    char dir[] = "/tmp/ltri_test_safetensors_XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    char shard_dir[256];
    path_join(shard_dir, sizeof(shard_dir), dir, "sharded");
    CHECK(mkdir(shard_dir, 0700) == 0);

    test_round_trip(dir, &rng);
    test_unsupported_dtypes(dir);
    test_bad_headers(dir);
    test_truncated(dir);
    test_sharded(shard_dir);

    CHECK(nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS) == 0);
    return test_finish("test_safetensors");
}
