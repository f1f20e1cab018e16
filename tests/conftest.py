import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every async test runs under both anyio backends."""
    return str(request.param)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the fault suite's table (jobs lost, duplicated, orphaned; time to recover), if it ran."""
    from tests.integration import fault_table

    if fault_table.ROWS:
        terminalreporter.section("fault table")
        terminalreporter.write_line(fault_table.table())
