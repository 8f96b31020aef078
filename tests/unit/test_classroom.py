"""Reading a container's memory from its cgroup, wherever Docker put it, and the host's total."""

from pathlib import Path

from conjuringd.classroom import container_memory, host_memory_total


def test_container_memory_cgroup_v2_systemd(tmp_path):
    scope = tmp_path / "system.slice" / "docker-abc.scope"
    scope.mkdir(parents=True)
    (scope / "memory.current").write_text("123456\n")
    assert container_memory("abc", tmp_path) == 123456


def test_container_memory_cgroup_v1_cgroupfs(tmp_path):
    folder = tmp_path / "memory" / "docker" / "abc"
    folder.mkdir(parents=True)
    (folder / "memory.usage_in_bytes").write_text("42\n")
    assert container_memory("abc", tmp_path) == 42


def test_container_memory_unknown_layout_is_none(tmp_path):
    assert container_memory("abc", tmp_path) is None


def test_host_memory_total_reads_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16384 kB\nMemFree: 1 kB\n")
    assert host_memory_total(meminfo) == 16384 * 1024
    assert host_memory_total(Path("/proc/meminfo")) > 0
