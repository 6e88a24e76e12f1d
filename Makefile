# Every target creates .venv on first use; nothing outside the project is installed.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lab bench lint notebooks clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[aws,test]"
	$(BIN)/python -m ipykernel install --sys-prefix --name algotrading --display-name "Python (algotrading)" >/dev/null
	# checkov pins boto3 to a release sagemaker cannot use, so it gets a venv of its own
	# (tests/test_template.py runs it from there; ~30 s to install).
	test -x $(VENV)/checkov/bin/python || $(PYTHON) -m venv $(VENV)/checkov
	$(VENV)/checkov/bin/python -m pip install --quiet "checkov>=3.2.400,<4"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/algotrading run

test: $(STAMP)
	$(BIN)/python -m pytest

lab: $(STAMP)
	$(BIN)/jupyter lab

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[aws,test,bench]"
	$(BIN)/python bench/run.py

lint: $(STAMP)
	$(BIN)/ruff check lib tests bench

# Refresh the committed notebook outputs (what nbval compares against) from a default run.
notebooks: $(STAMP)
	$(BIN)/algotrading run --update-notebooks

clean:
	rm -rf $(VENV) runs data/lake
