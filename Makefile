# Flows in VAEs: build the book and run every test in a project-local virtual environment.
#
#   make book       strict build of the HTML book into _build/html
#   make render-check  open the built book in headless Chromium and check every page
#   make test       ruff, then ONE pytest run: unit tests + every notebook under nbval
#   make lint       ruff only
#   make student    the student edition: _build/student/notebooks and _build/student/html
#   make grade SUBMISSION=nb.ipynb REPORT=report.json   grade one submitted notebook
#   make grade-all SUBMISSIONS=folder REPORT=grades.csv  grade a class into one CSV
#   make clean      remove build outputs and caches (keeps .venv)
#   make distclean  clean, and remove .venv too

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Touched after a successful install; requirements.txt or pyproject.toml newer than it
# means the environment is out of date and gets reinstalled.
STAMP  := $(VENV)/.requirements-installed

# The data root is read from FLOWLIB_DATA; when it is unset, use ../shared/data if present.
ifeq ($(strip $(FLOWLIB_DATA)),)
  ifneq ($(wildcard ../shared/data),)
    export FLOWLIB_DATA := $(abspath ../shared/data)
  endif
endif

# What pytest runs. Git does not keep empty folders, so only pass those that exist.
TEST_PATHS := $(wildcard tests notebooks)

.DEFAULT_GOAL := help
.PHONY: help venv test lint book render-check student grade grade-all clean distclean

help:
	@sed -n '3,11p' Makefile | sed 's/^# *//'

# ---------------------------------------------------------------- environment
$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
	  echo "error: $(PYTHON) is $$($(PYTHON) --version 2>&1); the pinned torch 2.15 needs Python >= 3.11." >&2; \
	  echo "       Run e.g. 'make test PYTHON=python3.11'." >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): requirements.txt pyproject.toml | $(BIN)/python
	@echo "Installing requirements.txt into $(VENV) (the first time downloads ~3 GB of torch wheels)..."
	$(BIN)/python -m pip install --progress-bar off -r requirements.txt
	@touch $@

venv: $(STAMP)

# ---------------------------------------------------------------- checks
lint: $(STAMP)
	$(BIN)/ruff check .

# ruff first, then ONE pytest run over the unit tests and every notebook. pytest runs even
# when ruff complains, so one run reports everything; the target fails if either failed.
# pytest exit code 5 means "no tests collected": a suite that runs nothing proves
# nothing, so that is a failure here. MPLBACKEND=Agg only for the tests: in the book,
# the kernel's inline backend must draw the figures.
test: $(STAMP)
	@if [ -z "$(TEST_PATHS)" ]; then \
	  echo "error: pytest collected no tests (neither tests/ nor notebooks/ exists)" >&2; exit 1; fi
	@echo "FLOWLIB_DATA=$${FLOWLIB_DATA:-<unset>}"
	@set +e; \
	echo "$(BIN)/ruff check ."; \
	$(BIN)/ruff check .; lint=$$?; \
	echo "$(BIN)/python -m pytest $(TEST_PATHS) --nbval-lax --nbval-current-env"; \
	MPLBACKEND=Agg $(BIN)/python -m pytest $(TEST_PATHS) --nbval-lax --nbval-current-env; rc=$$?; \
	if [ $$rc -eq 5 ]; then \
	  echo "error: pytest collected no tests in $(TEST_PATHS); a suite that runs nothing proves nothing" >&2; \
	  rc=1; fi; \
	if [ $$lint -ne 0 ]; then echo "error: ruff check failed (see above)" >&2; fi; \
	if [ $$rc -ne 0 ]; then echo "error: pytest failed (exit code $$rc)" >&2; fi; \
	[ $$lint -eq 0 ] && [ $$rc -eq 0 ]

# ---------------------------------------------------------------- book
# Always a full, strict rebuild: --all, warnings are errors (-W -n), every notebook
# is executed afresh (execute_notebooks: force in _config.yml), and a failing cell
# fails the build (nb_execution_raise_on_error).
book: $(STAMP)
	$(BIN)/jupyter-book build --all -W -n --keep-going .
	@echo "The book is at $(abspath _build/html/index.html)"

# ---------------------------------------------------------------- rendering
# Opens every page of _toc.yml in the built book (run `make book` first) in headless Chromium
# from Debian's packages and fails, naming page and element, on what a reader would see wrong:
# maths not typeset, figures not loaded, raw Markdown tables, object reprs, doubled references
# ("exercise Exercise 3.2"), images without alt text, figures shrunk below 80% of their width,
# numbering that does not restart per chapter, widget views. A full-page screenshot of each page
# goes to _build/screenshots. Offline, a local MathJax 3 is fetched once with `npm pack`.
# Needs chromium (apt-get install -y chromium) and npm; see scripts/check_render.py.
render-check: $(STAMP)
	$(BIN)/python scripts/check_render.py --html _build/html --toc _toc.yml --out _build/screenshots

# ---------------------------------------------------------------- coursework
# One source, two editions: the notebooks are the instructor edition; the student edition has
# every solution region replaced by a stub, prose solutions and solution cells removed. Its HTML
# is built strictly from the student notebooks, executed once (only exercise cells may fail, and
# only with the stub's NotImplementedError). Grading executes a submission in a fresh kernel and
# runs the hidden graded tests of coursework/graded/ (run it in a container for a real course).
student: $(STAMP)
	$(BIN)/python -m flowlib.book.coursework student --out _build/student --html

grade: $(STAMP)
	@if [ -z "$(SUBMISSION)" ] || [ -z "$(REPORT)" ]; then \
	  echo "usage: make grade SUBMISSION=path/to/notebook.ipynb REPORT=path/to/report.json [CHAPTER=04_planar_flows]" >&2; exit 2; fi
	$(BIN)/python -m flowlib.book.coursework grade "$(SUBMISSION)" --report "$(REPORT)" $(if $(CHAPTER),--chapter "$(CHAPTER)")

grade-all: $(STAMP)
	@if [ -z "$(SUBMISSIONS)" ] || [ -z "$(REPORT)" ]; then \
	  echo "usage: make grade-all SUBMISSIONS=folder REPORT=grades.csv [CHAPTER=04_planar_flows]" >&2; exit 2; fi
	$(BIN)/python -m flowlib.book.coursework grade-all "$(SUBMISSIONS)" --report "$(REPORT)" $(if $(CHAPTER),--chapter "$(CHAPTER)")

# ---------------------------------------------------------------- cleaning
clean:
	rm -rf _build .pytest_cache .ruff_cache .hypothesis
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
