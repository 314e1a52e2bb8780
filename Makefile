# Two commands for a fresh clone:  make setup  (or any target: each installs what it needs)
#                                  make test
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
VARIANT ?= seesaw_shuffle
BOARD   ?= ulx3s
# make sim: WEIGHTS (float checkpoint, default models/$(VARIANT).pt), IMAGES (folder of images
# or .npy, default the shipped evaluation faces), FACES (frames), WAVES=1 (FST trace)
WEIGHTS ?=
IMAGES  ?=
FACES   ?= 2
WAVES   ?= 0

.PHONY: help setup test test-slow test-all test-synthesis formal counts faces reference check-reference quantize sim build reports reports-seed reports-pnr clean

help:           ## this list
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t18

# The face detector's weights (MTCNN's P-, R- and O-Net, 2 MB) ship inside the facenet-pytorch
# wheel; quant/align.py reads them from the installed folder and never imports the package,
# whose pinned torch would replace ours: hence --no-deps. The stamp depends on this file too,
# so that a venv made before a change of these lines installs what they add.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	$(PY) -m pip install --quiet --no-deps facenet-pytorch==2.6.0
	touch $@

setup: $(STAMP) ## create .venv and install every dependency (from PyPI, nothing from the system)

test: $(STAMP)  ## the fast test suite (what CI runs)
	$(PY) -m pytest -q --durations=15

test-slow: $(STAMP) ## only the slow tier (whole frames, SDRAM refresh, peer); records reports/test_slow.xml
	$(PY) -m pytest -q --durations=15 -m "slow and not synthesis and not board" --junitxml=reports/test_slow.xml

test-all: $(STAMP) ## the default and the slow tier (everything but synthesis and board); records reports/test_all.xml
	$(PY) -m pytest -q --durations=25 -m "not synthesis and not board" --junitxml=reports/test_all.xml

test-synthesis: $(STAMP) ## tests that run yosys/nextpnr
	$(PY) -m pytest -q -m synthesis

formal: $(STAMP) ## formal proofs of the stream blocks, each against its mutant -> reports/formal.json
	$(PY) -m tests.formal

counts: $(STAMP) ## parameters and MACs of the zoo vs the paper -> build/counts.json
	$(PY) -m quant.counts

faces: $(STAMP) ## rebuild the shipped face set from scikit-image's data
	$(PY) -m quant.faces

reference: $(STAMP) ## retrain the shipped reference weights (about 40 min on 2 cores)
	$(PY) -m quant.reference_model train --variant $(VARIANT)

check-reference: $(STAMP) ## smoothness and spread of the reference weights -> build/reference_check.json
	$(PY) -m quant.reference_model check --variant $(VARIANT)

quantize: $(STAMP) ## quantize VARIANT (WEIGHTS) -> build/quant/$(VARIANT)/ artifact + fidelity report
	$(PY) -m quant --variant $(VARIANT) $(if $(WEIGHTS),--weights $(WEIGHTS))

build: $(STAMP) ## bitstream for BOARD (default ulx3s) -> build/$(BOARD)/ (report.json, .bit)
	$(PY) -m hw.build --board $(BOARD) --variant $(VARIANT)

sim: $(STAMP)    ## whole engine, whole frames in Verilator vs golden (VARIANT WEIGHTS IMAGES FACES BOARD WAVES) -> build/sim/report.json
	$(PY) -m sim.run_sim --variant $(VARIANT) --board $(BOARD) --faces $(FACES) \
	  $(if $(WEIGHTS),--weights $(WEIGHTS)) $(if $(IMAGES),--images $(IMAGES)) \
	  $(if $(filter 1,$(WAVES)),--waves)

# Every figure the README quotes, regenerated into reports/ (tests/test_figures.py checks the
# README against these files). Without place and route; about 45 min on 2 cores.
QUANT_DIR := build/quant/$(VARIANT)
reports: $(STAMP) ## regenerate reports/*.json from commands (no place and route; see reports-pnr)
	$(PY) -m hw.link.usb_model --json reports/usb_link.json --md reports/usb_link.md
	$(PY) -m quant.counts --json reports/counts.json
	$(PY) -m quant.reference_model check --variant $(VARIANT) --json reports/reference_check.json
	$(PY) -m quant --variant $(VARIANT) --out $(QUANT_DIR)
	cp $(QUANT_DIR)/report.json reports/quant_$(VARIANT).json
	cp $(QUANT_DIR)/report.md reports/quant_$(VARIANT).md
	cp $(QUANT_DIR)/per_layer.png reports/quant_$(VARIANT)_per_layer.png
	$(PY) -m quant --variant $(VARIANT) --act cordic --out $(QUANT_DIR)_cordic
	cp $(QUANT_DIR)_cordic/report.json reports/quant_$(VARIANT)_cordic.json
	$(PY) -m quant.techniques
	$(PY) -m quant.align --artifact $(QUANT_DIR)
	$(PY) -m hw.engine.plan --artifact $(QUANT_DIR) --all-boards --json reports/engine_plan.json
	$(PY) -m quant.activation --json reports/activation_error.json
	$(PY) -m quant.verification --shipped --artifact $(QUANT_DIR) --peer --json reports/verification_shipped.json
	$(PY) -m hw.memory.sdram --bench
	cp build/sdram/throughput.json reports/sdram_throughput.json
	$(PY) -m sim.run_sim --variant $(VARIANT) --artifact $(QUANT_DIR) --faces 2 --report reports/sim_$(VARIANT).json
	$(PY) -m sim.link_throughput    # two faces over the board design at 3 Mbaud: about 30 M cycles
	$(PY) -m sim.variants

# The quantizer on a reference model trained with another seed (training about 40 min on 2
# cores when build/$(VARIANT)_seed$(SEED).pt is missing, then four quantizations).
SEED ?= 1
reports-seed: $(STAMP) ## quantizer report on weights trained with SEED (default 1) -> reports/quant_other_seed.{json,md}
	$(PY) -m quant.other_weights --variant $(VARIANT) --seed $(SEED)

# Place and route of every board of boards.yaml that gets that far (the 25F and 12F stop at the
# firmware step, naming the resource); a board whose build stops leaves no report.
PNR_BOARDS := ulx3s ulx3s-cordic ulx3s-45f ulx3s-usb
reports-pnr: $(STAMP) ## the figures that need place and route: board builds, SDRAM controller and CORDIC unit alone
	for b in $(PNR_BOARDS); do \
	  $(PY) -m hw.build --board $$b --variant $(VARIANT) && \
	  cp build/$$b/report.json reports/board_$$b.json && \
	  cp build/$$b/report.md reports/board_$$b.md || exit 1; done
	$(PY) -m pytest -q -m synthesis tests/test_sdram.py
	cp build/sdram/synthesis.json reports/sdram_synthesis.json
	$(PY) -m pytest -q -m synthesis tests/test_hw_activation.py
	cp build/activation/synthesis.json reports/activation_synthesis.json
	cp build/activation/synthesis.md reports/activation_synthesis.md

clean:          ## remove build products
	rm -rf build
