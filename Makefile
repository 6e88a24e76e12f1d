# Every target creates .venv on first use, from the hashed lock in requirements/ (nothing
# unpinned, nothing outside the project). A changed lock rebuilds the venv from scratch, so it
# never keeps a package the lock dropped.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCKS := requirements/dev.txt requirements/checkov.txt
PIP_TOOLS := pip-tools==7.6.2
# pip-compile's common flags: hashes, no machine-specific index or find-links lines
COMPILE = $(VENV)-tools/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	--no-emit-find-links --no-emit-index-url --no-emit-trusted-host

.PHONY: run test test-fast lab bench lint lock notebooks clean

$(STAMP): $(LOCKS)
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	# checkov pins boto3 to a release sagemaker cannot use, so it gets a venv (and a lock) of its
	# own; tests/test_template.py runs it from there. pip installs on one core, so the two locks
	# install side by side, and the bytecode (half of pip's time) is compiled after, on every core.
	# Like pip, that skips a file this Python cannot compile (torch ships a 3.12-only one).
	$(PYTHON) -m venv $(VENV)/checkov
	$(VENV)/checkov/bin/python -m pip install --quiet --no-compile --require-hashes --no-deps \
		-r requirements/checkov.txt & checkov=$$!; \
	$(BIN)/python -m pip install --quiet --no-compile --require-hashes --no-deps -r requirements/dev.txt; \
	dev=$$?; wait $$checkov && test $$dev -eq 0
	$(BIN)/python -m compileall -qq -j 0 $(VENV)/lib $(VENV)/checkov/lib || true
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m algotrading.numerics --install-kernel
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/algotrading run

# Everything (unit, AWS on moto, notebooks, nbval, browser) on two workers: the notebook
# regression runs in pipeline order on one while the other tests run on the other (conftest.py).
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup

# The core's unit tests only, on two workers: no notebook, no moto server, no training, no
# subprocess loops.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup tests -m "not (notebooks or aws or browser or slow)"

lab: $(STAMP)
	$(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root)

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements/bench.txt
	$(BIN)/python bench/run.py
	$(BIN)/python bench/portfolio.py
	$(BIN)/python bench/scaling.py
	$(BIN)/python bench/whatif.py --cli
	$(BIN)/python bench/rl_env.py

lint: $(STAMP)
	$(BIN)/ruff check lib tests bench

# Refresh every lock from pyproject.toml (run after changing a dependency; commit the result).
# dev: what `make run` and `make test` install; bench, live and job are solved within dev's pins.
lock:
	test -x $(VENV)-tools/bin/pip-compile || { $(PYTHON) -m venv $(VENV)-tools && \
		$(VENV)-tools/bin/python -m pip install --quiet $(PIP_TOOLS); }
	$(COMPILE) --extra models --extra rl --extra aws --extra notebooks --extra live --extra test \
		-o requirements/dev.txt pyproject.toml
	$(COMPILE) --extra models --extra rl --extra aws --extra notebooks --extra live --extra test \
		--extra bench -c requirements/dev.txt -o requirements/bench.txt pyproject.toml
	$(COMPILE) -c requirements/dev.txt -o requirements/live.txt requirements/live.in
	# the jobs' lock leaves torch to the framework image; the package ships a copy (algotrading.wheelhouse)
	$(subst --allow-unsafe,--no-allow-unsafe,$(COMPILE)) --unsafe-package torch \
		-c requirements/dev.txt -o requirements/job.txt requirements/job.in
	cp requirements/job.txt lib/algotrading/job-lock.txt
	$(COMPILE) -o requirements/checkov.txt requirements/checkov.in

# Refresh the committed notebook outputs (what nbval compares against) and the committed run's
# recorded results (results/) from one default run.
notebooks: $(STAMP)
	$(BIN)/algotrading run --update-notebooks

clean:
	rm -rf $(VENV) $(VENV)-tools runs data/lake
