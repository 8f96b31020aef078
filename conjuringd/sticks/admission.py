"""The stick's side of enrolment, run in the stick adapter's executor: is this a configuration stick,
may it change the box (enrolling the first stick on a new box), enrolling an inserted stick on request,
and what its report says about it. The credential and the box's record are in `enrol.py`."""

from __future__ import annotations

from pathlib import Path

import structlog

from conjuringd.adapters.mounts import Mounter
from conjuringd.sticks.enrol import KEY_NAME, EnrolError, EnrolledStick, Enrolment, Verdict, read_credential
from conjuringd.sticks.layout import find_entry
from conjuringd.sticks.session import PULLED, StickInfo, StickSession

log = structlog.get_logger(__name__)


def admit(enrolment: Enrolment, session: StickSession, conjuring: Path, info: StickInfo, trust: str) -> Verdict:
    """Blocking: the enrolment verdict; the first stick on a new box is enrolled here (trust on first use)."""
    cred = read_credential(conjuring)  # also with trust = "any": an enrolled stick still gets passwords
    verdict = enrolment.check(cred, info.uuid, trust)
    if verdict.kind != "first":
        return verdict
    try:
        session.make_writable()
        conjuring = conjuring_folder(session.root) or conjuring  # a FUSE remount moved things
        stick = enrolment.enrol(conjuring, info.uuid, info.label, info.fstype, "first stick", only_if_first=True)
    except (OSError, EnrolError) as exc:
        if isinstance(exc, OSError) and exc.errno in PULLED:
            raise
        reason = f"first stick, but it could not be enrolled: {getattr(exc, 'strerror', None) or exc}"
        log.warning("stick_enrol_failed", device=info.device, label=info.label, error=reason)
        return Verdict("refused", reason)
    if stick is None:
        return enrolment.check(cred, info.uuid, trust)
    log.warning("stick_enrolled_on_first_use", device=info.device, label=info.label, uuid=info.uuid, id=stick.id)
    return Verdict("first", stick=stick)


def enrol_inserted(enrolment: Enrolment, mounter: Mounter, info: StickInfo) -> EnrolledStick:
    """Blocking (`conjuringctl enroll`): a new credential onto the stick, creating conjuring/ if need be."""
    with StickSession(mounter, info, writable=True) as session:
        session.make_writable()
        conjuring = find_entry(session.root, "conjuring")
        if conjuring is None:
            conjuring = session.root / "conjuring"
            conjuring.mkdir()
        return enrolment.enrol(conjuring, info.uuid, info.label, info.fstype, "conjuringctl enroll")


def conjuring_folder(root: Path) -> Path | None:
    """The stick's conjuring/ folder when it also holds custom/ (a configuration stick), else None.
    Looks at names only: nothing inside custom/ is read."""
    conjuring = find_entry(root, "conjuring")
    if conjuring is None or find_entry(conjuring, "custom") is None:
        return None
    return conjuring


def render_not_enrolled(when: str, hostname: str, label: str, fs_uuid: str, device: str) -> str:
    """REPORT.txt for a stick this box does not trust: what happened and how to enrol, nothing about the box's
    configuration. CRLF line endings, like every report."""
    lines = [
        "Conjuring report",
        "================",
        f"Time:     {when}",
        f"Box:      {hostname}",
        f"Stick:    {label or '(no label)'} (UUID {fs_uuid or '?'}, {device})",
        "Result:   NOT ENROLLED - this stick is not enrolled on this box",
        "",
        "This stick is not enrolled on this box, so the box did not read its",
        "configuration, changed nothing, and wrote no home backup onto it.",
        "",
        "To enrol it: with the stick inserted in the box, run as root on the box",
        "    conjuringctl enroll",
        f"(or: conjuringctl enroll {device}). The box then writes conjuring/{KEY_NAME}",
        "onto the stick and applies its configuration.",
        "",
    ]
    return "\r\n".join(line.replace("\r", "").replace("\n", " ") for line in lines)


def enrolment_line(verdict: Verdict) -> str:
    """One line for the report of an admitted stick."""
    stick = verdict.stick
    if verdict.kind == "first" and stick is not None:
        return (f"This is the first stick on this box, so the box ENROLLED it (id {stick.id}): from now on only "
                f"this stick, and sticks enrolled with 'conjuringctl enroll', can change the box. Its key is "
                f"conjuring/{KEY_NAME}: keep the stick safe and do not copy that file.")
    if verdict.kind == "enrolled" and stick is not None:
        return f"This stick is enrolled on this box (id {stick.id}, since {stick.enrolled_at})."
    if verdict.kind == "any" and stick is not None:
        return (f"This box accepts any stick ([usb] trust = \"any\"); this one is also enrolled (id {stick.id}), "
                "so it receives passwords and the class sheet.")
    if verdict.kind == "any":
        return ("This box accepts any stick ([usb] trust = \"any\"): sticks are not checked. Passwords and the "
                "class sheet go only onto an enrolled stick ('conjuringctl enroll' on the box).")
    return ""
