/* CUDA graphs of a step (kernels/backend.h: graph_begin .. graph_free).
 *
 * A decode step of an 8B model is ~350 small launches. Issued one by one, the
 * host spends a few microseconds on each, and the device waits whenever the
 * host falls behind (a batch step, whose kernels are short). Recorded once as
 * a graph, the step is one launch, and the device schedules the kernels back
 * to back (programmatic dependent launch edges stay in the graph).
 *
 * The backend records work on lane 0's stream with stream capture. A new
 * recording of the same shape (the same kernels, only their arguments differ:
 * a split count sized by a larger position bound) updates the graph already
 * instantiated, which costs a fraction of a new instantiation. A graph holds
 * the scratch buffers' addresses of its recording: once one has grown (a
 * larger shape ran), the graph is stale and launching it is refused. */
#include <stdlib.h>

#include "kernels/cuda/cuda_internal.h"

void cuda_graph_begin(ltri_backend *be) {
    cuda_impl *impl = cuda_enter(be);
    if (impl->lane != 0) ltri_fatal("cuda: graph_begin inside a lane");
    /* Thread-local: a call that is not allowed while recording (an
     * allocation, a synchronisation) fails on this thread only, loudly. */
    CUDA_CHECK(cudaStreamBeginCapture(impl->stream, cudaStreamCaptureModeThreadLocal));
}

/* A graph and the scratch epoch it was recorded in. */
typedef struct {
    cudaGraphExec_t exec;
    unsigned long epoch;
} cuda_graph;

void *cuda_graph_end(ltri_backend *be, void *old) {
    cuda_impl *impl = cuda_enter(be);
    cudaGraph_t graph = NULL;
    CUDA_CHECK(cudaStreamEndCapture(impl->stream, &graph));
    cuda_graph *g = (cuda_graph *)old;
    if (g) {
        cudaGraphExecUpdateResultInfo info;
        if (cudaGraphExecUpdate(g->exec, graph, &info) != cudaSuccess) {
            /* another shape: the error is the answer, not a fault */
            (void)cudaGetLastError();
            CUDA_CHECK(cudaGraphExecDestroy(g->exec));
            g->exec = NULL;
        }
    } else if (!(g = (cuda_graph *)calloc(1, sizeof(cuda_graph)))) {
        ltri_fatal("cuda: out of host memory for a graph");
    }
    if (!g->exec) CUDA_CHECK(cudaGraphInstantiate(&g->exec, graph, 0));
    CUDA_CHECK(cudaGraphDestroy(graph));
    g->epoch = impl->scratch_epoch;
    return g;
}

int cuda_graph_launch(ltri_backend *be, void *graph) {
    cuda_impl *impl = cuda_enter(be);
    if (impl->lane != 0) ltri_fatal("cuda: graph_launch inside a lane");
    cuda_graph *g = (cuda_graph *)graph;
    if (g->epoch != impl->scratch_epoch) return 1; /* it would write a freed scratch buffer */
    CUDA_CHECK(cudaGraphLaunch(g->exec, impl->stream));
    return 0;
}

void cuda_graph_free(ltri_backend *be, void *graph) {
    cuda_enter(be);
    cuda_graph *g = (cuda_graph *)graph;
    if (!g) return;
    if (g->exec) CUDA_CHECK(cudaGraphExecDestroy(g->exec));
    free(g);
}
