# sam2-triton: set up, export, test. Everything runs inside the virtual environment $(VENV).
#
#   make install          create $(VENV) and install everything (torch, sam2, ONNX, Triton, client)
#   make run              the main job: export tiny, lint it, serve it with Triton, segment a
#                         sample image and track an object through a sample video with the
#                         client (official checkpoint, downloaded if missing; random weights
#                         only when the download fails)
#   make serve            build the model repository and run Triton on it, on 127.0.0.1 unless
#                         SERVE_ADDRESS says otherwise (Ctrl-C stops)
#   make test             the test suite (what CI runs, after `make check`)
#   make test-fast        the unit tier alone: no model weights, no server (about a minute)
#   make test-multi-server  two servers behind the NGINX router (about five minutes)
#   make parity-all       graph fidelity, lint and served image + video parity for all eight
#                         sizes, one table (BENCH_OUT/all_sizes.md)
#   make bench-precision  bf16 / fp16 against fp32: network errors and tracked-mask IoU
#   make check            ruff (lint + format check) and mypy over the tree; `make fmt` fixes
#                         what ruff can fix
#   make bench-orchestration  the video tracker's own cost per frame (host time, device-to-host
#                         transfers) with instant stand-in networks, on DEVICE (default cpu)
#   make bench-gpu        video tracking speed on DEVICE (default cuda): the official predictor
#                         (eager, vos_optimized) against this tracker in process and served;
#                         `make bench-gpu DEVICE=cpu` is a small version with random weights
#   make wheelhouse       the wheels that install the benchmarks on a machine without network
#                         beside its torch (tools/wheelhouse.py), into WHEELHOUSE
#
# Variables: MODEL (size, default tiny), PROFILE (deployment profile of engines), SERVE_PROFILE
# (profile of the served repository, default cpu), HTTP_PORT / GRPC_PORT / METRICS_PORT,
# SERVE_ADDRESS (interface `make serve` listens on, default 127.0.0.1),
# PYTHON (interpreter used to create the venv).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
CLI := $(VENV)/bin/sam2-triton

MODEL ?= tiny
PROFILE ?= gpu-fp16
SERVE_PROFILE ?= cpu
REPOSITORY ?= build/model_repository
HTTP_PORT ?= 8000
GRPC_PORT ?= 8001
METRICS_PORT ?= 8002
SERVE_ADDRESS ?= 127.0.0.1
PORTS := --http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT) --metrics-port $(METRICS_PORT)
ARTIFACTS ?= artifacts
MODELS := tiny small base_plus large sam2_tiny sam2_small sam2_base_plus sam2_large

# The registry's torch/torchvision builds (CUDA builds, which also run on CPU-only machines).
TORCH_SPEC ?= torch==2.9.1 torchvision==0.24.1
SAM2_SPEC ?= sam2==1.1.0

.PHONY: install system-deps run export export-all download lint check fmt test test-fast \
        test-multi-server fidelity-all parity-all bench-precision \
        bench-networks bench-serving bench-video bench-orchestration bench-gpu soak perf-analyzer \
        perf-analyzer-video repository serve engines verify-engines wheelhouse clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel
	$(PIP) install $(TORCH_SPEC)
	# sam2 is a source distribution: build it against the torch above (no build isolation),
	# without its optional CUDA extension unless SAM2_BUILD_CUDA=1 is set.
	SAM2_BUILD_CUDA=$${SAM2_BUILD_CUDA:-0} $(PIP) install --no-build-isolation $(SAM2_SPEC)
	$(PIP) install -e ".[dev]"
	$(MAKE) system-deps
	touch $@

# perf_analyzer (shipped in tritonclient[all]) needs libb64 from Debian; libcudart comes with
# the nvidia-cuda-runtime-cu12 wheel that torch installs. The router tests run Debian's NGINX
# (nginx-light: the router in front of several servers, docs/deployment.md).
SYSTEM_PACKAGES := libb64-0d nginx-light
system-deps:
	@if ldconfig -p | grep -q libb64.so.0d && command -v nginx >/dev/null; then \
	  echo "libb64 and nginx present"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends $(SYSTEM_PACKAGES); \
	else echo "NOTE: install $(SYSTEM_PACKAGES) (Debian/Ubuntu) for perf_analyzer and the router"; fi

# The main job: export the tiny model from the official checkpoint (./checkpoints/<file>, its
# SHA-256 verified; downloaded there when missing, giving up within seconds without network;
# random weights only when that fails, said in a "weights: RANDOM (...)" line), check the graphs
# against TensorRT's parser, then build the CPU repository, start Triton, segment a sample image
# and track a disc through a 10-frame sample video through the client, write the overlays and
# masks into demo/ and demo/video/ (overlay.png / overlay.mp4; overlay_random_weights.png / .mp4
# for random weights), and stop the server. A file in ./checkpoints whose checksum is not the
# official one stops the run: delete it, or export it as given with `make export`.
run: install
	$(CLI) export --model $(MODEL) --download-if-missing --random-weights-if-missing --output $(ARTIFACTS)/$(MODEL)
	$(CLI) lint $(ARTIFACTS)/$(MODEL)
	$(PY) -m sam2_triton.serving.demo --export-dir $(ARTIFACTS)/$(MODEL) --output demo $(PORTS)

# A ready-to-serve repository for MODEL and SERVE_PROFILE (TensorRT profiles need `make engines`).
repository: install
	$(CLI) build-repository --model-dir $(ARTIFACTS)/$(MODEL) --profile $(SERVE_PROFILE) --output $(REPOSITORY)

# Triton (the server carried by nvidia-pytriton) on that repository until Ctrl-C.
serve: repository
	$(CLI) serve --repository $(REPOSITORY) $(PORTS) --address $(SERVE_ADDRESS)

download: install
	$(CLI) download --model $(MODEL)

# Export from ./checkpoints/<official file>; fails with instructions when it is missing.
export: install
	$(CLI) export --model $(MODEL) --output $(ARTIFACTS)/$(MODEL) $(EXPORT_FLAGS)

export-all: install
	for m in $(MODELS); do \
	  $(CLI) export --model $$m --output $(ARTIFACTS)/$$m $(EXPORT_FLAGS) || exit 1; done
	$(CLI) lint $(addprefix $(ARTIFACTS)/,$(MODELS))

lint: install
	$(CLI) lint $(ARTIFACTS)/$(MODEL)

# Code checks: ruff's lint rules and formatting (pyproject.toml [tool.ruff]) and mypy
# (pyproject.toml [tool.mypy]; tools/typecheck.py lays the package out as installed for it).
check: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) tools/typecheck.py

fmt: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: install
	$(PY) -m pytest

# Tests marked `model` (a written checkpoint or its export) or `served` (a Triton server) are
# left out; tests/conftest.py marks them from the fixtures they use.
test-fast: install
	$(PY) -m pytest -m "not model and not served"

# Two CPU servers of the test export behind Debian's NGINX (tests/test_multi_server.py): videos
# stay on one server over HTTP and gRPC, a killed server's videos fail at once, the others go on.
# About five minutes, so not part of `make test` (CI's time); needs nginx (make system-deps).
test-multi-server: install
	$(PY) -m pytest -m multi_server tests/test_multi_server.py

# Fidelity and lint for every size (about an hour on 2 CPU cores).
fidelity-all: install
	SAM2_TRITON_TEST_MODELS=all $(PY) -m pytest tests/test_fidelity.py tests/test_lint.py

# Graph fidelity, lint, served image parity (SAM2ImagePredictor) and served video parity
# (SAM2VideoPredictor, 4 frames) for every size, one pytest run per size (benchmarks/all_sizes.py;
# 4 to 5 minutes per small size on 2 CPU cores): $(BENCH_OUT)/all_sizes.json and all_sizes.md,
# the worst graph error, image IoU and video IoU per size; logs beside them.
# MODELS_CHECKED=tiny,large checks some sizes.
parity-all: install
	$(PY) -m sam2_triton.benchmarks.all_sizes --models $(or $(MODELS_CHECKED),all) \
	  --json $(BENCH_OUT)/all_sizes.json

# Reduced precision in the PyTorch runtime (benchmarks/precision.py): per-network error of bf16 /
# fp16 autocast against fp32 and mask IoU of a 30-frame, 2-object tracked video against the fp32
# run, on the CPU; fails when a bound of configs/precision_bounds.py is exceeded.
bench-precision: install
	$(PY) -m sam2_triton.benchmarks.precision --model $(MODEL) --frames 30 --objects 2 \
	  $${CHECKPOINT:+--checkpoint $$CHECKPOINT} --check --json $(BENCH_OUT)/precision.json

# Benchmarks (benchmarks/README.md): each writes $(BENCH_OUT)/<name>.json and a plot <name>.png
# (BENCH_OUT=docs/benchmarks refreshes the published ones). Run `make run` first for the export.
BENCH_OUT ?= build/benchmarks

# Latency of each network: ONNX Runtime vs the official PyTorch modules.
bench-networks: install
	$(PY) -m sam2_triton.benchmarks.networks --export-dir $(ARTIFACTS)/$(MODEL) --model $(MODEL) \
	  $${CHECKPOINT:+--checkpoint $$CHECKPOINT} $${CHECKPOINT:---random-weights} \
	  --json $(BENCH_OUT)/networks.json

# Served pipeline vs the in-process SAM2ImagePredictor: one-shot and one further click.
bench-serving: install
	$(PY) -m sam2_triton.benchmarks.image_serving --export-dir $(ARTIFACTS)/$(MODEL) --model $(MODEL) \
	  $${CHECKPOINT:+--checkpoint $$CHECKPOINT} $${CHECKPOINT:---random-weights} $(PORTS) \
	  --json $(BENCH_OUT)/image_serving.json

# Served track_video vs the offline SAM2VideoPredictor: 1 and 3 objects, concurrent sequences.
bench-video: install
	$(PY) -m sam2_triton.benchmarks.video_tracking --export-dir $(ARTIFACTS)/$(MODEL) --model $(MODEL) \
	  $${CHECKPOINT:+--checkpoint $$CHECKPOINT} $${CHECKPOINT:---random-weights} $(PORTS) \
	  --json $(BENCH_OUT)/video_tracking.json

# The tracker's orchestration (benchmarks/orchestration.py): host milliseconds and device-to-host
# transfers per frame of VideoTracker with instant stand-in networks on DEVICE (default cpu),
# 1280x720 frames, 1 / 4 / 16 objects, SAM 2 and SAMURAI, full and compact answers.
bench-orchestration: install
	$(PY) -m sam2_triton.benchmarks.orchestration --device $(or $(DEVICE),cpu) \
	  --json $(BENCH_OUT)/orchestration.json

# Video tracking speed on DEVICE (benchmarks/gpu_suite.py; default cuda): SAM2VideoPredictor
# (eager and vos_optimized) against this tracker in process (PyTorch, TensorRT where installed)
# and served, 1 / 3 / 8 objects and 1 / 4 / 16 videos. Weights: CHECKPOINT=file, else the
# official checkpoint (downloaded when missing); DEVICE=cpu (a small version: 1 / 3 objects,
# 1 / 2 videos, 3 frames) or RANDOM_WEIGHTS=1 uses random weights, with a warning.
bench-gpu: install
	$(PY) -m sam2_triton.benchmarks.gpu_suite --device $(or $(DEVICE),cuda) --model $(MODEL) \
	  $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT),$(if $(or $(RANDOM_WEIGHTS),$(filter cpu,$(DEVICE))),--random-weights)) \
	  $(PORTS) --work-dir build/gpu_suite --json $(BENCH_OUT)/gpu_suite_$(or $(DEVICE),cuda).json

# Reliability soak (benchmarks/soak.py): SOAK_MINUTES (default 20) of concurrent good and bad
# image and video requests against a CPU server of the export on loopback; errors by kind,
# latency percentiles and the server's memory over time; fails on anything unexpected.
soak: install
	$(PY) -m sam2_triton.benchmarks.soak --export-dir $(ARTIFACTS)/$(MODEL) --model $(MODEL) \
	  --duration-s $$(( $${SOAK_MINUTES:-20} * 60 )) $(PORTS) --check --json $(BENCH_OUT)/soak.json

# perf_analyzer against the `segment` ensemble of a running server (`make serve` in another shell);
# CONCURRENCY=N or START:END[:STEP] (a sweep, one row per level).
perf-analyzer: install
	$(PY) -m sam2_triton.benchmarks.perf_analyzer --url localhost:$(GRPC_PORT) --protocol grpc \
	  $${IMAGE:+--image $$IMAGE} --concurrency $${CONCURRENCY:-1} --repository $(REPOSITORY) \
	  --json $(BENCH_OUT)/perf_analyzer_segment.json

# perf_analyzer driving `track_video` sequences (FRAMES=folder of frames, else synthetic ones).
perf-analyzer-video: install
	$(PY) -m sam2_triton.benchmarks.perf_analyzer --model track_video --url localhost:$(GRPC_PORT) \
	  --protocol grpc $${FRAMES:+--video $$FRAMES} --sequence-length $${SEQUENCE_LENGTH:-8} \
	  --concurrency $${CONCURRENCY:-1} --repository $(REPOSITORY) \
	  --json $(BENCH_OUT)/perf_analyzer_track_video.json

# GPU machines with TensorRT (pip install -e ".[tensorrt]").
engines: install
	$(CLI) build-engines --model-dir $(ARTIFACTS)/$(MODEL) --profile $(PROFILE)

verify-engines: install
	$(CLI) verify-engines --model-dir $(ARTIFACTS)/$(MODEL) --profile $(PROFILE)

# Wheels for a machine without network (tools/wheelhouse.py): this project and sam2 built here,
# everything else they need for WHEELHOUSE_PYTHON with the target's torch WHEELHOUSE_TORCH left to
# it; WHEELHOUSE_FLAGS adds options (--serving: the Triton server and client in serving/;
# --provided torch numpy: keep the target's numpy; --local: for this interpreter). Install there:
#   pip install --no-index --no-deps --find-links DIR -r DIR/requirements.txt
WHEELHOUSE ?= build/wheelhouse
WHEELHOUSE_PYTHON ?= 3.12
WHEELHOUSE_TORCH ?= 2.11.0
wheelhouse: install
	$(PY) tools/wheelhouse.py --output $(WHEELHOUSE) --python-version $(WHEELHOUSE_PYTHON) \
	  --torch $(WHEELHOUSE_TORCH) $(WHEELHOUSE_FLAGS)

clean:
	rm -rf $(ARTIFACTS) .pytest_cache build demo perf_analyzer_segment.csv
