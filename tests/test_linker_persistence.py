"""Snapshot + journal: recovery after a crash at any point keeps every published identity."""

from __future__ import annotations

import dataclasses
import json
from types import UnionType
from typing import Union, get_args, get_origin, get_type_hints

import numpy as np
import pytest
from linker_scenes import Appearance, People, scene_messages

from common.modality import Modality
from edge.linking.assignment import MatchingRules
from edge.linking.events import IdentityDecision, event_from_json, event_to_json
from edge.linking.gallery import GalleryConfig, TrackKey
from edge.linking.linker import EndedSpan, IdentityLinker, TrackState
from edge.linking.persistence import (
    Journal,
    JournalError,
    encode_journal_line,
    journal_segments,
    read_journal,
    recover,
    save_snapshot,
)
from edge.linking.publishing import UpdateLog, build_update, read_updates
from edge.messages import SightingBatch

VIS, IR = Modality.VISIBLE, Modality.INFRARED
RULES = MatchingRules()
GALLERY = GalleryConfig(storage_dtype="float16")


def scene():
    people = People(10, seed=5)
    appearances = []
    for p in range(10):
        appearances.append(Appearance(p, "rgb", VIS, 100 + p, 0.5 * p, 1.5))
        appearances.append(Appearance(p, "ir", IR, 200 + p, 0.5 * p + 1.8, 1.5))
    return scene_messages(people, appearances)


def step(linker, item):
    message, rows = item
    if isinstance(message, SightingBatch):
        return linker.observe(message, rows)
    return linker.end_camera(message.producer_id, message.camera_id)


def assignments(events) -> dict[tuple, int]:
    """Final (camera, track) -> global id of the decisions in ``events``."""
    return {(e.camera_id, e.track_id): e.global_id for e in events if isinstance(e, IdentityDecision)}


def run(state_dir, items, linker=None, journal=None, snapshot_at=()):
    linker = linker or IdentityLinker(RULES, GALLERY)
    journal = journal or Journal(state_dir, linker.last_seq + 1, fsync=False)
    published = []
    for index, item in enumerate(items):
        events = step(linker, item)
        journal.append(events)
        published += events
        if index in snapshot_at:
            save_snapshot(state_dir, linker)
            journal.rotate(linker.last_seq)
    return linker, journal, published


def same_gallery(a: IdentityLinker, b: IdentityLinker) -> None:
    """``b`` (recovered) has ``a``'s identities, numbering, events and track assignments.

    Not journaled, by design: tracks still waiting for their first decision (``b`` has not heard
    of them; they are decided when their next sightings come) and track endings by idleness
    (``b`` ends them again when their camera's clock moves on).
    """
    assert sorted(a.gallery.identities) == sorted(b.gallery.identities)
    assert a.gallery.next_global_id == b.gallery.next_global_id
    assert a.last_seq == b.last_seq
    assigned_a = {k: s.global_id for k, s in a.tracks.items() if s.global_id is not None}
    assigned_b = {k: s.global_id for k, s in b.tracks.items() if s.global_id is not None}
    assert assigned_b.items() >= assigned_a.items()
    for gid, identity in a.gallery.identities.items():
        assert identity.live_tracks <= b.gallery.identities[gid].live_tracks


def test_event_json_round_trip():
    items = scene()
    linker, _, events = run_in_memory(items[:80])
    for event in events:
        back = event_from_json(json.loads(json.dumps(event_to_json(event))))
        assert type(back) is type(event) and back.seq == event.seq
        if isinstance(event, IdentityDecision):
            np.testing.assert_allclose(back.embedding, event.embedding, atol=1e-3)
            assert back.global_id == event.global_id and back.modality is event.modality


def run_in_memory(items):
    linker = IdentityLinker(RULES, GALLERY)
    events = []
    for item in items:
        events += step(linker, item)
    return linker, None, events


def test_recovery_from_journal_alone(tmp_path):
    items = scene()
    linker, journal, events = run(tmp_path, items[:150])
    journal.close()
    recovered = recover(tmp_path, RULES, GALLERY)
    assert recovered.snapshot_seq == 0 and len(recovered.replayed) == len(events)
    same_gallery(linker, recovered.linker)


@pytest.mark.parametrize("storage", ["float32", "float16"])
def test_recovery_from_snapshot_plus_journal_continues_like_the_original(tmp_path, storage):
    gallery = GalleryConfig(storage_dtype=storage)
    items = scene()
    original = IdentityLinker(RULES, gallery)
    original, journal, _ = run(tmp_path, items[:120], linker=original, snapshot_at={60})
    journal.close()
    recovered = recover(tmp_path, RULES, gallery)
    assert 0 < recovered.snapshot_seq < original.last_seq  # a crash between journal and snapshot
    same_gallery(original, recovered.linker)
    # Both continue with the rest of the replay: the same identities come out.
    rest_original = [e for item in items[120:] for e in step(original, item)]
    rest_recovered = [e for item in items[120:] for e in step(recovered.linker, item)]
    assert assignments(rest_original) == assignments(rest_recovered)
    same_gallery(original, recovered.linker)
    # The prototypes came back: exactly from the snapshot; for decisions after it, as the journal
    # recorded them (the track's evidence at the decision, not its later refinements).
    for gid, identity in original.gallery.identities.items():
        mine = original.gallery.prototype_vectors(identity)
        theirs = recovered.linker.gallery.prototype_vectors(recovered.linker.gallery.identities[gid])
        assert mine.shape == theirs.shape
        np.testing.assert_allclose(
            np.sort(mine @ mine.T, axis=None), np.sort(theirs @ theirs.T, axis=None), atol=0.05
        )


def test_a_damaged_snapshot_is_an_error(tmp_path):
    original, journal, _ = run(tmp_path, scene()[:80], snapshot_at={70})
    journal.close()
    path = tmp_path / "snapshot.bin"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(JournalError, match="cut short"):
        recover(tmp_path, RULES, GALLERY)


def test_crash_during_snapshot_keeps_the_previous_snapshot_and_journal(tmp_path):
    items = scene()
    original, journal, _ = run(tmp_path, items[:120], snapshot_at={50})
    journal.close()
    # A snapshot write that died before its rename leaves only a temporary file behind.
    (tmp_path / ".snapshot.bin.abc123.tmp").write_bytes(b"MPALINK\x01 half a snapshot")
    recovered = recover(tmp_path, RULES, GALLERY)
    same_gallery(original, recovered.linker)


def test_crash_between_snapshot_and_journal_rotation(tmp_path):
    items = scene()
    original, journal, _ = run(tmp_path, items[:120])
    save_snapshot(tmp_path, original)  # ... and the process dies before journal.rotate()
    journal.close()
    recovered = recover(tmp_path, RULES, GALLERY)
    assert recovered.replayed == [] and recovered.snapshot_seq == original.last_seq
    same_gallery(original, recovered.linker)


def test_torn_last_journal_line_is_dropped_and_cut_off(tmp_path):
    items = scene()
    original, journal, events = run(tmp_path, items[:120])
    journal.close()
    path = journal_segments(tmp_path)[-1]
    intact = path.read_bytes()
    last = json.dumps(event_to_json(events[-1])).encode()
    with open(path, "ab") as handle:
        handle.write(last[: len(last) // 2])  # the process died in the middle of a write
    recovered = recover(tmp_path, RULES, GALLERY)
    assert recovered.torn_tail
    same_gallery(original, recovered.linker)
    assert path.read_bytes() == intact  # repaired: the next append starts on a fresh line
    journal = Journal(tmp_path, recovered.linker.last_seq + 1, fsync=False)
    more = [e for item in items[120:200] for e in step(recovered.linker, item)]
    journal.append(more)
    journal.close()
    again = recover(tmp_path, RULES, GALLERY)
    assert not again.torn_tail
    same_gallery(recovered.linker, again.linker)


def test_damage_a_crash_cannot_explain_is_an_error(tmp_path):
    items = scene()
    _, journal, _ = run(tmp_path, items[:120])
    journal.close()
    path = journal_segments(tmp_path)[-1]
    lines = path.read_bytes().splitlines(keepends=True)
    assert len(lines) > 3
    broken = lines[:1] + [b'{"kind": "decision", "seq": \n'] + lines[2:]
    path.write_bytes(b"".join(broken))
    with pytest.raises(JournalError, match=r":2 \(byte \d+\): damaged journal entry"):
        recover(tmp_path, RULES, GALLERY)
    path.write_bytes(b"".join(lines[:1] + lines[2:]))  # a missing event
    with pytest.raises(JournalError, match="events are missing"):
        recover(tmp_path, RULES, GALLERY)


def test_rotation_drops_the_segments_a_snapshot_covers(tmp_path):
    items = scene()
    linker, journal, _ = run(tmp_path, items[:150], snapshot_at={40, 100})
    journal.close()
    segments = journal_segments(tmp_path)
    assert len(segments) == 1
    events, _ = read_journal(tmp_path)
    assert all(e.seq > recover(tmp_path, RULES, GALLERY).snapshot_seq for e in events)


def test_update_log_keeps_complete_lines_and_knows_the_last_journal_seq(tmp_path):
    items = scene()
    _, _, events = run_in_memory(items[:150])
    decisions = [e for e in events if isinstance(e, IdentityDecision)]
    assert len(decisions) >= 4
    log = UpdateLog(tmp_path / "updates.jsonl")
    log.write([(build_update(d, "linker", k), d.seq) for k, d in enumerate(decisions[:3])])
    log.close()
    with open(tmp_path / "updates.jsonl", "ab") as handle:
        handle.write(b'{"kind":"identity","global_id":')  # torn
    log = UpdateLog(tmp_path / "updates.jsonl")
    assert log.last_journal_seq == decisions[2].seq
    log.write([(build_update(decisions[3], "linker", 3), decisions[3].seq)])
    log.close()
    lines = read_updates(tmp_path / "updates.jsonl")
    assert [line["journal_seq"] for line in lines] == [d.seq for d in decisions[:4]]
    assert [line["global_id"] for line in lines] == [d.global_id for d in decisions[:4]]
    assert lines[0]["kind"] == "identity" and lines[0]["producer_id"] == "linker"


# ------------------------------------------------------------------ every field is saved (issue 10)


def _distinct_value(hint, index: int):
    """A value of type ``hint`` that differs from the field's default (the index keeps them apart)."""
    if hint is Modality:
        return Modality.INFRARED
    if hint == TrackKey:
        return ("node-x", f"cam-{index}", 1000 + index)
    if hint is int:
        return 7 + index
    if hint is float:
        return 0.25 + index
    if get_origin(hint) in (Union, UnionType):
        inner = [a for a in get_args(hint) if a is not type(None)][0]
        if inner is np.ndarray:
            rng = np.random.default_rng(index)
            return rng.standard_normal(8).astype(np.float32)
        return _distinct_value(inner, index)
    raise AssertionError(f"the test has no value for type {hint!r}: extend _distinct_value (and the codec)")


def _assert_same_record(a, b) -> None:
    for f in dataclasses.fields(a):
        mine, theirs = getattr(a, f.name), getattr(b, f.name)
        if isinstance(mine, np.ndarray):
            np.testing.assert_array_equal(mine, theirs, err_msg=f"{type(a).__name__}.{f.name}")
        else:
            assert mine == theirs and type(mine) is type(theirs), f"{type(a).__name__}.{f.name}"


@pytest.mark.parametrize("cls", [TrackState, EndedSpan])
def test_every_field_of_the_linker_state_survives_a_snapshot(tmp_path, cls):
    """Fails when a field of TrackState / EndedSpan is added but not saved or not restored."""
    hints = get_type_hints(cls)
    values = {f.name: _distinct_value(hints[f.name], i) for i, f in enumerate(dataclasses.fields(cls))}
    record = cls(**values)
    for f in dataclasses.fields(cls):  # the test itself must not pass by leaving a default in place
        if f.default is not dataclasses.MISSING:
            assert isinstance(values[f.name], np.ndarray) or values[f.name] != f.default, f.name
    linker = IdentityLinker(RULES, GALLERY)
    if cls is TrackState:
        linker.tracks[record.key] = record
        linker.camera_tracks.setdefault(record.camera_id, {})[record.key] = record
    else:
        linker.ended[record.key[1]] = [record]
    linker.clock, linker.last_seq = 12.5, 3
    linker.counters.batches = 4
    save_snapshot(tmp_path, linker)
    back = recover(tmp_path, RULES, GALLERY).linker
    restored = back.tracks[record.key] if cls is TrackState else back.ended[record.key[1]][0]
    _assert_same_record(record, restored)
    assert (back.clock, back.last_seq, back.counters) == (12.5, 3, linker.counters)


def test_a_recovered_linker_equals_the_snapshotted_one_attribute_by_attribute(tmp_path):
    """Every attribute of the linker (not only the ones this test knows) comes back from a snapshot."""
    items = scene()
    original, journal, _ = run(tmp_path, items[:150], snapshot_at={149})
    journal.close()
    assert original.tracks and original.gallery is not None
    back = recover(tmp_path, RULES, GALLERY).linker
    assert vars(back).keys() == vars(original).keys()
    for name, mine in vars(original).items():
        theirs = getattr(back, name)
        if name in ("tracks", "camera_tracks", "history"):
            flat_mine = (
                mine
                if name != "camera_tracks"
                else {(c, k): s for c, d in mine.items() for k, s in d.items()}
            )
            flat_theirs = (
                theirs
                if name != "camera_tracks"
                else {(c, k): s for c, d in theirs.items() for k, s in d.items()}
            )
            assert flat_mine.keys() == flat_theirs.keys(), name
            for key, state in flat_mine.items():
                _assert_same_record(state, flat_theirs[key])
        elif name == "gallery":
            assert mine.engine_id == theirs.engine_id and mine.dim == theirs.dim
            assert mine.next_global_id == theirs.next_global_id
            for gid, identity in mine.identities.items():
                other = theirs.identities[gid]
                assert (identity.created_ts, identity.last_seen_ts) == (other.created_ts, other.last_seen_ts)
                assert identity.live_tracks == other.live_tracks
                assert len(identity.prototypes) == len(other.prototypes)
        else:
            assert mine == theirs, name


# ------------------------------------------------------------------ integrity (issue 12)


def test_every_single_bit_flip_in_a_snapshot_is_an_error_naming_file_and_offset(tmp_path):
    """Before: 593 of 1,416 flips loaded silently as another state, 266 gave raw tracebacks."""
    original, journal, _ = run(tmp_path, scene()[:120], snapshot_at={119})
    journal.close()
    path = tmp_path / "snapshot.bin"
    intact = path.read_bytes()
    rng = np.random.default_rng(12)
    positions = rng.choice(len(intact) * 8, size=1500, replace=False)
    for bit in positions:
        damaged = bytearray(intact)
        damaged[bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(bytes(damaged))
        with pytest.raises(JournalError) as info:
            recover(tmp_path, RULES, GALLERY)
        assert str(path) in str(info.value) and "byte" in str(info.value), str(info.value)
    path.write_bytes(intact)
    same_gallery(original, recover(tmp_path, RULES, GALLERY).linker)


def test_a_damaged_journal_line_is_detected_by_its_checksum(tmp_path):
    _, journal, _ = run(tmp_path, scene()[:120])
    journal.close()
    path = journal_segments(tmp_path)[-1]
    lines = path.read_bytes().splitlines(keepends=True)
    line = bytearray(lines[1])
    digit = next(i for i in range(9, len(line)) if chr(line[i]).isdigit())
    line[digit] = ord("7") if line[digit] != ord("7") else ord("3")  # still valid JSON, another number
    path.write_bytes(b"".join([lines[0], bytes(line), *lines[2:]]))
    with pytest.raises(JournalError, match=r":2 \(byte \d+\): damaged journal entry \(checksum mismatch"):
        recover(tmp_path, RULES, GALLERY)


def _published_log(state_dir, events) -> None:
    log = UpdateLog(state_dir / "identity_updates.jsonl")
    decisions = [e for e in events if isinstance(e, IdentityDecision)]
    log.write([(build_update(d, "linker", k), d.seq) for k, d in enumerate(decisions)])
    log.close()


def test_a_journal_cut_short_never_reuses_a_published_global_id(tmp_path):
    """Before: the next new person got a global id that was already published (gid 72 twice)."""
    items = scene()
    _, journal, events = run(tmp_path, items[:150])
    journal.close()
    _published_log(tmp_path, events)
    published = {e.global_id for e in events if isinstance(e, IdentityDecision)}
    path = journal_segments(tmp_path)[-1]
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[: len(lines) // 2]))  # the disk lost the second half
    recovered = recover(tmp_path, RULES, GALLERY)
    assert recovered.lost_published is not None and recovered.needs_snapshot
    assert recovered.linker.last_seq == events[-1].seq  # event seqs are not reused either
    fresh = [e for item in items[150:] for e in step(recovered.linker, item)]
    new_ids = {e.global_id for e in fresh if isinstance(e, IdentityDecision) and e.event == "new"}
    assert new_ids, "the rest of the scene should create identities"
    assert not new_ids & published
    assert min(e.seq for e in fresh) > events[-1].seq


def test_a_journal_that_lost_everything_still_reserves_published_ids(tmp_path):
    items = scene()
    _, journal, events = run(tmp_path, items[:150])
    journal.close()
    _published_log(tmp_path, events)
    for path in journal_segments(tmp_path):
        path.write_bytes(b"")
    recovered = recover(tmp_path, RULES, GALLERY)
    assert recovered.linker.gallery is None
    fresh = [e for item in items[:150] for e in step(recovered.linker, item)]
    published = {e.global_id for e in events if isinstance(e, IdentityDecision)}
    assert {e.global_id for e in fresh if isinstance(e, IdentityDecision)}.isdisjoint(published)


def test_an_entry_that_cannot_be_applied_is_quarantined_and_recovery_goes_on(tmp_path):
    """Before: one poisoned entry made every restart exit 1."""
    items = scene()
    original, journal, events = run(tmp_path, items[:150])
    journal.close()
    path = journal_segments(tmp_path)[-1]
    lines = path.read_bytes().splitlines(keepends=True)
    decision = next(i for i, e in enumerate(events) if isinstance(e, IdentityDecision) and i > 3)
    # A well-formed, correctly checksummed entry that cannot be applied: an eviction before any
    # engine (no gallery yet) would be refused; here a decision naming a gallery of another dim.
    bad = dataclasses.replace(events[decision], embedding=np.ones(3, np.float32))
    lines[decision] = encode_journal_line(bad)
    path.write_bytes(b"".join(lines))
    first = recover(tmp_path, RULES, GALLERY)
    assert first.quarantined == 1 and first.needs_snapshot
    assert first.linker.last_seq == original.last_seq
    record = json.loads((tmp_path / "quarantine" / "journal.jsonl").read_text().splitlines()[0])
    assert record["seq"] == events[decision].seq and record["line"] == decision + 1 and record["reason"]


def test_stale_tmp_files_are_removed_on_recovery(tmp_path):
    original, journal, _ = run(tmp_path, scene()[:80], snapshot_at={70})
    journal.close()
    (tmp_path / ".snapshot.bin.k3j2.tmp").write_bytes(b"half")
    (tmp_path / ".linker_stats.json.x.tmp").write_bytes(b"{")
    recovered = recover(tmp_path, RULES, GALLERY)
    assert recovered.stale_tmp_removed == 2 and not list(tmp_path.glob(".*.tmp"))
    same_gallery(original, recovered.linker)


def test_a_state_dir_that_is_a_file_is_a_clear_error(tmp_path):
    target = tmp_path / "state"
    target.write_text("not a directory")
    with pytest.raises(JournalError, match="is a file, not a directory"):
        recover(target, RULES, GALLERY)


def test_a_snapshot_from_before_checksums_is_named_as_such(tmp_path):
    header = json.dumps({"format": 2, "linker": {}, "extra": {}, "arrays": {}}).encode()
    (tmp_path / "snapshot.bin").write_bytes(b"MPALINK\x01" + len(header).to_bytes(8, "little") + header)
    with pytest.raises(JournalError, match="snapshot format 2 .*written before checksums"):
        recover(tmp_path, RULES, GALLERY)
