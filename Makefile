# msdp: the single entry point. `make setup` installs everything and runs the demo; `make test` runs the tests.
PY := .venv/bin/python
export MUJOCO_GL ?= egl

.PHONY: setup env demo test test-slow lint bench colcon

setup: env demo

env:
	@bash scripts/setup_env.sh

demo: env
	$(PY) -m msdp.cli demo --out results/demo

test: env
	$(PY) -m pytest -q -m "not slow" test

test-slow: env
	@$(PY) -m pytest -q -m slow test; status=$$?; \
	if [ $$status -eq 5 ]; then echo "no tests are marked slow yet"; else exit $$status; fi

# msdp as a ROS package: build/, install/, log/ here; then `source install/setup.bash`. CI builds it in a
# workspace of its own (test/test_colcon_build.py, part of `make test`).
colcon: env
	.venv/bin/colcon build --base-paths . --build-base build --install-base install

lint: env
	.venv/bin/ruff check src test bench launch

bench: env
	$(PY) bench/sim_env.py
	$(PY) bench/control_loop.py
	$(PY) bench/bag_read.py
	$(PY) bench/pretrain.py
	$(PY) bench/encoder_latency.py
	$(PY) bench/learner.py
	$(PY) bench/train_loop.py
	$(PY) bench/transition_log.py
	$(PY) bench/ft_node.py
	$(PY) bench/precision.py
	$(PY) bench/learner_precision.py
