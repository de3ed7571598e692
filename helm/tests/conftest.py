"""Prints what the schema validation covered at the end of a run of test_chart.py."""

from __future__ import annotations


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001
    try:
        import test_chart
    except ImportError:
        return
    if not test_chart.VALIDATED:
        return
    write = terminalreporter.write_line
    terminalreporter.section("Kubernetes schema validation (kubernetes-validate, strict)")
    total = 0
    for (mode, kube), counts in sorted(test_chart.VALIDATED.items()):
        total += sum(counts.values())
        kinds = ", ".join(f"{kind} x{n}" if n > 1 else kind for kind, n in sorted(counts.items()))
        structural = test_chart.STRUCTURAL_ONLY.get((mode, kube))
        extra = f"; structural checks only (no schema): {', '.join(sorted(structural))}" if structural else ""
        write(f"{mode:<26} Kubernetes {kube:<7} {sum(counts.values())} manifests valid: {kinds}{extra}")
    write(f"{total} manifests validated against the Kubernetes schemas")
