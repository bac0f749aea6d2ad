"""Who a lead is: which stored lead a request means, merging two halves of one person, a
phone number that moved to someone else, and identity changes, as plain functions.

The use cases (core/service.py) load the leads that hold a request's keys, ask these rules
what to write, and write it in one transaction.
"""

from dataclasses import dataclass, replace

from server.core import rules
from server.core.domain import IdentityChange, Lead, LeadKey, replaced


@dataclass(frozen=True)
class Holders:
    """The stored leads that hold a request's keys: its BSUID, its phone (None if none).
    Both may be the same lead."""

    by_bsuid: Lead | None = None
    by_phone: Lead | None = None


@dataclass(frozen=True)
class Plan:
    """What a write does to the leads it touches.

    `base` is the lead to update (`old` as stored, merged with any absorbed half, under
    the keys the write settles on), or None for a new lead; `absorbed` are halves merged
    into it and removed; `robbed` are leads that lose their phone number to it.
    """

    old: Lead | None
    base: Lead | None
    absorbed: tuple[Lead, ...] = ()
    robbed: tuple[Lead, ...] = ()


def same_lead(a: Lead | None, b: Lead | None) -> bool:
    """Whether two stored leads are one row (stored keys are unique per workspace)."""
    return a is not None and b is not None and a.key == b.key


def meant(key: LeadKey, holders: Holders) -> Lead | None:
    """The lead a request means (rules 1 and 2 of the contract), or None (rule 3)."""
    if key.business_scoped_user_id and holders.by_bsuid is not None:
        return holders.by_bsuid
    by_phone = holders.by_phone
    if by_phone is None or not key.contact_phone:
        return None
    if key.business_scoped_user_id and by_phone.business_scoped_user_id not in (
            "", key.business_scoped_user_id):
        return None  # the number now belongs to another person (see "moved")
    return by_phone


def merge_halves(bsuid_half: Lead, phone_half: Lead) -> Lead:
    """One person's two leads as one, keeping `bsuid_half`'s row and BSUID and
    `phone_half`'s phone number.

    Each field comes from the half updated more recently (`bsuid_half` on a tie); a slot
    only one half has is kept; message counts add up; created_at is the earliest and
    last_message_at the latest.
    """
    if rules.later(phone_half.updated_at, bsuid_half.updated_at):
        newer, older = phone_half, bsuid_half
    else:
        newer, older = bsuid_half, phone_half
    return replace(
        rules.fill_slots(newer, older),
        workspace_id=bsuid_half.workspace_id,
        contact_phone=phone_half.contact_phone or bsuid_half.contact_phone,
        business_scoped_user_id=bsuid_half.business_scoped_user_id,
        message_count=bsuid_half.message_count + phone_half.message_count,
        created_at=rules.earliest(bsuid_half.created_at, phone_half.created_at),
        updated_at=rules.latest(bsuid_half.updated_at, phone_half.updated_at),
        last_message_at=rules.latest(bsuid_half.last_message_at, phone_half.last_message_at),
        etag=bsuid_half.etag,
    )


def settle(target: Lead | None, phone: str, bsuid: str, holders: Holders) -> Plan:
    """The plan of a write that leaves `target` (None: a new lead) under `phone` and
    `bsuid` ("" keeps the target's own), where `holders` hold those two keys now.

    Another lead holding the BSUID is the same person: `target` merges into it. Another
    lead holding the phone is the same person if it has no BSUID (it merges in), and
    someone else if it has a different one (it loses the number: "a phone that moved").
    """
    absorbed: list[Lead] = []
    robbed: list[Lead] = []
    survivor = target
    bsuid_holder = holders.by_bsuid if bsuid else None
    if bsuid_holder is not None and not same_lead(bsuid_holder, target):
        survivor = bsuid_holder
        if target is not None:
            absorbed.append(target)
    merged = survivor
    if merged is not None and absorbed:
        merged = merge_halves(merged, absorbed[0])
    phone_holder = holders.by_phone if phone else None
    if phone_holder is not None and not any(
            same_lead(phone_holder, lead) for lead in (survivor, *absorbed)):
        if phone_holder.business_scoped_user_id:
            robbed.append(phone_holder)
        elif merged is not None:
            absorbed.append(phone_holder)
            merged = merge_halves(merged, phone_holder)
        else:
            # A new lead with a phone some lead holds: the write means that lead instead
            # (meant() gives it); reached only by a caller that did not ask meant().
            merged = survivor = phone_holder
    if merged is not None:
        keys = (phone or merged.contact_phone, bsuid or merged.business_scoped_user_id)
        if keys != (merged.contact_phone, merged.business_scoped_user_id):
            merged = replaced(merged, contact_phone=keys[0], business_scoped_user_id=keys[1])
    return Plan(old=survivor, base=merged, absorbed=tuple(absorbed), robbed=tuple(robbed))


def upsert_plan(key: LeadKey, holders: Holders) -> Plan:
    """The plan of an upsert naming `key`: the lead it means takes the request's keys
    (a phone lead gets the BSUID; a BSUID lead gets the phone), merging or moving by
    the rules of settle()."""
    return settle(meant(key, holders), key.contact_phone, key.business_scoped_user_id,
                  holders)


def key_after(change: IdentityChange, lead: Lead) -> LeadKey:
    """The key `lead` has after `change`: each new part replaces the old one."""
    return LeadKey(lead.workspace_id, change.new_contact_phone or lead.contact_phone,
                   change.new_business_scoped_user_id or lead.business_scoped_user_id)


def requested_key(change: IdentityChange) -> LeadKey:
    """The new key as the request gives it (only the parts it names), to find a lead the
    change already reached; key_after() is the key a found lead ends under."""
    return LeadKey(change.old.workspace_id, change.new_contact_phone,
                   change.new_business_scoped_user_id)
