# gchat: `make run-server` and `make test` work from a fresh clone.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

BENCH_STAMP := $(VENV)/.bench-installed
LOADGEN := bench/build/gchat-load
LOADGEN_SOURCES := $(wildcard bench/loadgen/*.c bench/loadgen/*.h)
LOADGEN_CFLAGS ?= -O2 -std=c11 -Wall -Wextra

.PHONY: venv run-server run-cluster test lint bench loadgen compiler soak clean irctest

venv: $(STAMP)

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

# The last line runs the server in the foreground (exec), so Ctrl-C and SIGTERM reach it.
run-server: $(STAMP)
	exec $(PY) -m gchat.server $(ARGS)

# A local cluster: redis-server and two nodes (7070, 7071) sharing it (needs redis-server).
run-cluster: $(STAMP)
	exec bin/gchat-cluster $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(ARGS)

# The benchmark: gchat (with its SQLite history, and gchat-memory without) against the
# thread, asyncio, uvloop and gevent baselines, driven by the C load generator (about 5
# minutes). ARGS adds options, e.g.
# make bench ARGS='--scenario fan-out --duration 5' (or ARGS='--load python').
bench: $(BENCH_STAMP) $(LOADGEN)
	$(PY) -m gchat.bench run --load c --server gchat --server gchat-memory --server threads \
		--server asyncio --server uvloop --server gevent $(ARGS)

$(BENCH_STAMP): $(STAMP) requirements-bench.txt
	$(PY) -m pip install --quiet -r requirements-bench.txt
	touch $(BENCH_STAMP)

# The C load generator (bench/loadgen/, C11 and libc only), built with the system
# compiler into bench/build/ (git ignores it). Without a compiler, root installs gcc.
loadgen: $(LOADGEN)

$(LOADGEN): $(LOADGEN_SOURCES)
	@command -v $(CC) >/dev/null 2>&1 || $(MAKE) --no-print-directory compiler
	@mkdir -p $(@D)
	$(CC) $(LOADGEN_CFLAGS) -o $@ $(filter %.c,$^)

compiler:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc libc6-dev; \
	else \
		echo "the C load generator needs a C compiler ($(CC)): apt-get install gcc" >&2; exit 1; \
	fi

# The load tests of tests/reliability, bigger and longer: SOAK_CLIENTS subscribers for
# SOAK_SECONDS, e.g. make soak SOAK_CLIENTS=2000 SOAK_SECONDS=300. Each test prints a
# report however it ends (deadline, Ctrl-C, SIGTERM included), a progress line a minute,
# and keeps the report in var/soak-report-server.txt and var/soak-report-cluster.txt
# (rewritten every 10 s while it runs, so a run killed outright leaves its last state).
SOAK_CLIENTS ?= 1000
SOAK_SECONDS ?= 60
soak: $(STAMP)
	GCHAT_SOAK_CLIENTS=$(SOAK_CLIENTS) GCHAT_SOAK_SECONDS=$(SOAK_SECONDS) \
	GCHAT_TEST_DEADLINE=$$(( $(SOAK_SECONDS) + 600 )) \
		$(PY) -m pytest -s --timeout 0 tests/reliability/test_load.py tests/cluster/test_cluster_load.py $(ARGS)

# irctest's T1 and T2 subsets (../shared/IRC.md) against a fresh gchat per test: prints
# irctest's summary, then "passed X of Y" per tier; fails when fewer than IRCTEST_MIN (T1)
# or IRCTEST_MIN_T2 pass.
# ARGS adds pytest options, e.g. make irctest ARGS='-k testPing --tb=long'.
IRCTEST_DIR ?= ../shared/irctest
IRCTEST_MIN ?= 106  # one below what passes today (docs/irc.md): fewer is a regression
IRCTEST_MIN_T2 ?= 49  # T2 (sasl, chathistory): likewise
IRCTEST_JOBS ?= 2
IRCTEST_STAMP := $(VENV)/.irctest-installed
irctest: $(IRCTEST_STAMP)
	IRCTEST_DIR=$(IRCTEST_DIR) IRCTEST_MIN=$(IRCTEST_MIN) IRCTEST_MIN_T2=$(IRCTEST_MIN_T2) \
		IRCTEST_JOBS=$(IRCTEST_JOBS) \
		$(PY) -m tests.irctest.run $(ARGS)

$(IRCTEST_STAMP): $(STAMP) requirements-irctest.txt
	$(PY) -m pip install --quiet -r requirements-irctest.txt
	touch $(IRCTEST_STAMP)

lint: $(STAMP)
	$(PY) -m ruff check gchat tests bench
	$(PY) -m mypy gchat

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis bench/build
	find . -name __pycache__ -prune -exec rm -rf {} +
