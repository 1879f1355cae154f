# The environment of ltri's ranks: sourced by ltri-run and the Slurm scripts.
# Each variable keeps a value the caller set already.

# NCCL: NVLink SHARP multicast (NVLS) off. ltri's collectives are small
# all-gathers of partial attention that gain nothing from it, and on shared GPU
# hosts (the H200 machines this project runs on among them) a program that uses
# multicast can take the host's GPUs out of service for others. Keep it off
# also where you start the ranks by hand (mpirun -x NCCL_NVLS_ENABLE=0).
export NCCL_NVLS_ENABLE="${NCCL_NVLS_ENABLE:-0}"
# NCCL says why when it fails (INFO for start-up details).
export NCCL_DEBUG="${NCCL_DEBUG:-WARN}"

# Open MPI: mpirun refuses to start as root (containers, CI) unless told.
if [ "$(id -u)" = 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
# One rank per GPU: on a small machine that may be more ranks than cores.
export OMPI_MCA_rmaps_base_oversubscribe="${OMPI_MCA_rmaps_base_oversubscribe:-1}"

# What mpirun forwards to the ranks of other nodes (srun forwards everything).
LTRI_MPI_ENV=(-x NCCL_NVLS_ENABLE -x NCCL_DEBUG)
[ -n "${LTRI_LOG:-}" ] && LTRI_MPI_ENV+=(-x LTRI_LOG)
[ -n "${OMP_NUM_THREADS:-}" ] && LTRI_MPI_ENV+=(-x OMP_NUM_THREADS)
[ -n "${CUDA_VISIBLE_DEVICES:-}" ] && LTRI_MPI_ENV+=(-x CUDA_VISIBLE_DEVICES)
true
