from conjuringd.sticks.layout import find_layout


def test_finds_upper_case_8_3_names(tmp_path):
    (tmp_path / "CONJURING" / "CUSTOM").mkdir(parents=True)
    (tmp_path / "CONJURING" / "HOME_BAC").mkdir()  # 8.3 truncation is not home_backup
    layout = find_layout(tmp_path)
    assert layout.custom == tmp_path / "CONJURING" / "CUSTOM"
    assert layout.home_backup is None


def test_exact_case_wins_and_backup_inside_custom(tmp_path):
    (tmp_path / "conjuring" / "custom" / "Home_Backup").mkdir(parents=True)
    (tmp_path / "conjuring" / "Custom").mkdir()
    layout = find_layout(tmp_path)
    assert layout.custom == tmp_path / "conjuring" / "custom"
    assert layout.home_backup == tmp_path / "conjuring" / "custom" / "Home_Backup"


def test_backup_beside_custom_preferred(tmp_path):
    (tmp_path / "conjuring" / "custom" / "home_backup").mkdir(parents=True)
    (tmp_path / "conjuring" / "home_backup").mkdir()
    assert find_layout(tmp_path).home_backup == tmp_path / "conjuring" / "home_backup"


def test_not_a_conjuring_stick(tmp_path):
    (tmp_path / "photos").mkdir()
    assert find_layout(tmp_path) is None
    (tmp_path / "conjuring").mkdir()
    assert find_layout(tmp_path).custom is None


def test_symlinked_custom_is_not_followed(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "conjuring").mkdir()
    (tmp_path / "conjuring" / "custom").symlink_to(tmp_path / "elsewhere")
    assert find_layout(tmp_path).custom is None


def test_report_replaces_existing_name_in_any_case(tmp_path):
    (tmp_path / "CONJURING").mkdir()
    layout = find_layout(tmp_path)
    assert layout.report == tmp_path / "CONJURING" / "REPORT.txt"
    (tmp_path / "CONJURING" / "REPORT.TXT").write_text("old")
    assert layout.report == tmp_path / "CONJURING" / "REPORT.TXT"
