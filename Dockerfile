# The ddprofiler image: Debian 12 slim, Debian's Python 3.11 and the ddprofiler wheel in a
# virtual environment, no compilers; runs as the non-root user `ddprofiler`, which needs
# these capabilities from the runtime (Docker's --cap-add, Kubernetes' securityContext;
# see deploy/kubernetes/daemonset.yaml and docs/docker.md), never a privileged container:
#   BPF PERFMON SYS_PTRACE DAC_READ_SEARCH SYSLOG
# and the host's PID namespace (--pid=host, hostPID: true) to see the host's processes:
#   docker run --pid=host --cap-drop ALL --cap-add BPF --cap-add PERFMON --cap-add SYS_PTRACE \
#     --cap-add DAC_READ_SEARCH --cap-add SYSLOG --read-only -v /sys/kernel/tracing:/sys/kernel/tracing:ro ddprofiler
#
# The wheel is built outside (the Rust toolchain is not a Debian package new enough, and an
# image with compilers is what the runtime stage avoids): scripts/build-image.sh builds it
# (manylinux when scripts/build-wheels.sh made one) into dist/ and then this file:
#   buildah build --isolation chroot --pull=never -t ddprofiler:dev .
ARG BASE=docker.io/library/debian:bookworm-slim

# Stage 1: the virtual environment with the wheel and its dependencies, installed offline
# from dist/ (scripts/build-image.sh puts their wheels there with `pip download`). Its
# interpreter is a copy (--copies), the image's own: stage 2 gives that file, and no other,
# the capabilities.
FROM ${BASE} AS install
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 python3-venv binutils \
 && rm -rf /var/lib/apt/lists/*
COPY dist/ /tmp/dist/
# zstandard ships its C backend (the one CPython uses) and a cffi one, both with debug
# information (23 MB): the cffi one goes, the other extensions are stripped.
RUN python3 -m venv --copies /opt/ddprofiler \
 && cd /opt/ddprofiler/bin && ln -sf python3 python && ln -sf python3 "$(readlink -f /usr/bin/python3 | xargs basename)" \
 && /opt/ddprofiler/bin/pip install --no-cache-dir -q --no-index --find-links /tmp/dist ddprofiler \
 && /opt/ddprofiler/bin/pip uninstall -q -y pip setuptools \
 && find /opt/ddprofiler -name __pycache__ -prune -exec rm -rf {} + \
 && rm -f /opt/ddprofiler/lib/python3*/site-packages/zstandard/_cffi.* \
 && find /opt/ddprofiler -name '*.so' -exec strip --strip-unneeded {} + \
 && /opt/ddprofiler/bin/python -c "import ddprofiler._native"

# Stage 2: the runtime, Debian's python3 (its standard library; the venv's interpreter is
# a copy of its binary) and no compilers.
FROM ${BASE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/* \
 && useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin ddprofiler
COPY --from=install /opt/ddprofiler /opt/ddprofiler
# Permitted-only file capabilities on the image's own interpreter: a container runtime
# starts the non-root user with none of its own; the process raises what the runtime
# granted (privileges.raise_effective), and a capability the runtime withheld is named at
# start instead of failing the exec as +ep would. Kubernetes must not set
# allowPrivilegeEscalation: false (no_new_privs ignores file capabilities). Debian's byte
# code goes too (compiled in memory at start; the root file system is read-only anyway).
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libcap2-bin \
 && setcap cap_bpf,cap_perfmon,cap_sys_ptrace,cap_dac_read_search,cap_syslog+p /opt/ddprofiler/bin/python3 \
 && DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq --auto-remove libcap2-bin \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/* \
 && find /usr/lib/python3* -name __pycache__ -prune -exec rm -rf {} + \
 && install -d -o ddprofiler -g ddprofiler /var/lib/ddprofiler
# Profiles land in /var/lib/ddprofiler with --output-dir when no Agent is used, and the state
# file of --upload-symbols under XDG_STATE_HOME: a volume in the manifests (their root file
# system is read-only).
ENV PATH=/opt/ddprofiler/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    XDG_STATE_HOME=/var/lib/ddprofiler
# Numeric, so that Kubernetes can check runAsNonRoot.
USER 10001:10001
WORKDIR /var/lib/ddprofiler
ENTRYPOINT ["python", "-m", "ddprofiler"]
