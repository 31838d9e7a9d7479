#!/usr/bin/env python3
"""Parses a Prometheus text exposition from stdin with prometheus_client's parser and prints
every sample as one JSON list: [{"name", "labels", "value"}, ...] (tests/metrics.rs)."""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families

samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        samples.append({"name": s.name, "labels": s.labels, "value": s.value})
json.dump(samples, sys.stdout)
