# Two commands do everything on a fresh Debian/Ubuntu machine with Python 3.11:
#   make demo   set up (system libraries, .venv, ROS 2 wheels, interface package, project) and run the main job
#   make test   set up and run the whole test suite
# Every target that starts ROS keeps DDS discovery on this machine and uses its own domain id.

VENV       ?= .venv
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.cmr_fusion_setup.stamp
SOURCES    := $(shell git ls-files setup.py setup.cfg package.xml scripts/setup.sh cmr_fusion_msgs cmr_fusion_ros config models launch bags 2>/dev/null)

export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST

.PHONY: setup demo test clean

setup: $(STAMP)

$(STAMP): $(SOURCES)
	VENV=$(VENV) bash scripts/setup.sh
	touch $@

demo: $(STAMP)
	ROS_DOMAIN_ID=$${ROS_DOMAIN_ID:-$$(( $$$$ % 100 + 1 ))} $(VENV)/bin/cmr-fusion demo --out demo_out

test: $(STAMP)
	$(PY) -m pytest -p no:cacheprovider -q tests

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
