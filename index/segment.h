/* Span discovery from the triangular attention pattern (Ltri-LLM).
 *
 * Inside a semantic chunk, tokens attend to the chunk's start and to each
 * other, so on the attention map a chunk [x, y] shows as a lower triangle of
 * high mass. With A_ij the attention (mean over heads) that query i pays to key
 * j, the triangle score of [x, y] is
 *     S(x, y) = sum_{i=x..y} sum_{j=x..i} (A_ij - theta)
 *             = S(x, y-1) + C_y(y - x) - theta (y - x + 1),
 * C_i(d) = sum_{d'<=d} A_{i,i-d'} being the row prefix sum over the band, so
 * all candidates cost O(n * max_len). theta is the mass a key must beat to be
 * "inside" (uniform attention over w keys gives 1/w per key).
 *
 * Selecting non-overlapping triangles: the paper uses non-maximum suppression
 * (SEGMENT_NMS: the best end per start with S > 0, taken by descending score,
 * rejecting overlaps; gaps become filler spans of at most max_len). Greedy NMS
 * has a bias: two adjacent true chunks scored as one span get
 * S1 + S2 - theta L1 L2, which it takes whenever that beats max(S1, S2). The
 * default (SEGMENT_DP) solves the same selection exactly: the partition into
 * spans of min_len .. max_len tokens with the largest total score, by dynamic
 * programming in O(n * max_len). Both are tested on synthetic triangles.
 *
 * The attention values come as a band: band[i * B + d] = A(base + i, base + i - d)
 * for d < B (d = 0 is the token itself). B >= 2 * max_len lets the confidence
 * (below) see one neighbour's worth of keys. */
#ifndef LTRI_INDEX_SEGMENT_H
#define LTRI_INDEX_SEGMENT_H

typedef enum {
    SEGMENT_DP = 0,
    SEGMENT_NMS = 1,
} segment_select;

typedef struct {
    int min_len;  /* shortest span (DP: every span; NMS: triangles) */
    int max_len;  /* longest span */
    float theta;  /* per-entry baseline of the triangle score */
    segment_select select;
} segment_params;

typedef struct {
    int start, len;   /* region-relative */
    float score;      /* S(start, end); <= 0 for a span no triangle supports */
    float confidence; /* in [0, 1]: in-span mass / (in-span mass + mass its queries pay the previous len keys) */
} segment_span;

/* Segments rows [0, n) of a band of width B. Unless flush, the last max_len
 * rows stay open (a triangle may still grow into tokens not seen yet): the
 * spans returned cover [0, *n_final) exactly, in order, and the caller keeps
 * [*n_final, n) for the next call. With flush, *n_final == n. Returns the number
 * of spans written (at most max_out; -1 if that is too small). */
int segment_spans(const float *band, int B, int n, const segment_params *p, int flush, segment_span *out,
                  int max_out, int *n_final);

/* Scratch memory of segment_spans for regions of up to max_n rows and spans
 * of up to max_len tokens, kept by a caller that segments often: a call
 * needs ~2 x n x max_len doubles, which malloc hands out as fresh mmap'd
 * pages each time (measured: two thirds of a 768-row call's 0.66 ms). */
typedef struct {
    double *S, *prefix, *best;
    int *starts, *lens, *arg;
    int max_n, max_len;
} segment_workspace;

int segment_workspace_init(segment_workspace *ws, int max_n, int max_len); /* -1: out of memory */
void segment_workspace_free(segment_workspace *ws);

/* segment_spans on a workspace: the same result; n and p->max_len must fit it. */
int segment_spans_ws(segment_workspace *ws, const float *band, int B, int n, const segment_params *p, int flush,
                     segment_span *out, int max_out, int *n_final);

/* Fixed blocks (InfLLM): [0, n) cut into blocks of block_len; unless flush, a
 * partial last block stays open. Same contract as segment_spans. */
int segment_blocks(int n, int block_len, int flush, segment_span *out, int max_out, int *n_final);

/* Attention each key of [0, n) received from the queries of the band that saw
 * it: recv[j] = sum_{i >= j, i - j < B, i < n} A(i, j). InfLLM's criterion for
 * representative tokens. */
void segment_received(const float *band, int B, int n, float *recv);

#endif
