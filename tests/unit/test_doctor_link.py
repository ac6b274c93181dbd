"""`sparkctl doctor`'s check of the Sparks' direct link (#15), on hosts laid out under a fake
root: the interface named, up, its MTU, cluster.address on it."""

from __future__ import annotations

from pathlib import Path

from sparkctl.tools.doctor import check_link, run_checks
from sparkctl.tools.doctor.host import Result
from tests.unit.test_doctor import Spark, assert_fails

PEER = {"name": "spark-b", "url": "http://192.168.100.2:8009", "api_key_file": "/k"}
ADDR = "2: enp1s0f1np1    inet 192.168.100.1/24 brd 192.168.100.255 scope global enp1s0f1np1\n"


def linked(tmp_path: Path, *, state: str = "up", mtu: str = "9000", address: str = ADDR) -> Spark:
    spark = Spark(tmp_path)
    spark.settings_data["cluster"] = {
        "node": "spark-a",
        "interface": "enp1s0f1np1",
        "address": "192.168.100.1",
        "peers": [PEER],
    }
    spark.files["/sys/class/net/enp1s0f1np1/operstate"] = state + "\n"
    spark.files["/sys/class/net/enp1s0f1np1/mtu"] = mtu + "\n"
    spark.commands["ip -o addr show dev enp1s0f1np1"] = Result(0, address)
    return spark


def test_one_spark_passes_and_is_in_the_report(tmp_path: Path) -> None:
    spark = Spark(tmp_path)
    check = spark.check(check_link)
    assert (check.status, check.detail) == ("pass", "no cluster configured: one Spark")
    assert "cluster link" in {c.name for c in run_checks(spark.settings(), spark.host())}


def test_a_link_up_with_jumbo_frames_and_its_address_passes(tmp_path: Path) -> None:
    check = linked(tmp_path).check(check_link)
    assert (check.status, check.detail) == ("pass", "enp1s0f1np1 is up, MTU 9000, 192.168.100.1 on it")


def test_peers_without_an_interface_warn_that_spanning_models_cannot_run(tmp_path: Path) -> None:
    spark = Spark(tmp_path)
    spark.settings_data["cluster"] = {"node": "spark-a", "peers": [PEER]}
    check = spark.check(check_link)
    assert check.status == "warn" and "models that span Sparks cannot run" in check.detail
    assert check.fix is not None and "ibdev2netdev" in check.fix


def test_a_missing_interface_or_a_pulled_cable_fails(tmp_path: Path) -> None:
    spark = linked(tmp_path)
    spark.settings_data["cluster"]["interface"] = "enp1s0f0np0"
    assert_fails(spark.check(check_link), detail="no network interface enp1s0f0np0", fix="ibdev2netdev")
    down = linked(tmp_path / "down", state="down")
    assert_fails(down.check(check_link), detail="enp1s0f1np1 is down", fix="QSFP cable")


def test_a_small_mtu_warns_and_a_missing_address_fails_with_both_fixes(tmp_path: Path) -> None:
    small = linked(tmp_path, mtu="1500").check(check_link)
    assert (
        small.status == "warn"
        and "MTU 1500" in small.detail
        and small.fix is not None
        and "9000" in small.fix
    )
    both = linked(tmp_path / "b", mtu="1500", address="2: enp1s0f1np1    inet 10.0.0.9/24\n").check(
        check_link
    )
    assert both.status == "fail"
    assert "192.168.100.1 is not an address of enp1s0f1np1" in both.detail and "MTU 1500" in both.detail
    assert both.fix is not None and "192.168.100.1/24" in both.fix and "MTU 9000" in both.fix
