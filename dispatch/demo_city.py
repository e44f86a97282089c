"""The demo city: a jurisdiction tree, officers on duty and about a thousand devices.

Anping (安平市) is fictional; its codes have the shape of GB/T 2260 codes (6-digit division,
then 3 digits each for street, community and grid cell)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import asyncpg

from core.mosquitto_passwords import hash_password
from core.passwords import hash_password as hash_officer_password
from core.settings import Settings
from dispatch.credentials import demo_password

CITY = ("990100", "安平市", "Anping")
DISTRICTS = [
    ("990102", "东城区", "Dongcheng"),
    ("990103", "西城区", "Xicheng"),
    ("990104", "南湖区", "Nanhu"),
]
STREETS = [("幸福街道", "Xingfu Street"), ("和平街道", "Heping Street")]
COMMUNITIES = [("春晖社区", "Chunhui Community"), ("翠竹社区", "Cuizhu Community")]
GRIDS_PER_COMMUNITY = 3
DEMO_OFFICER_PASSWORD = "pingan-demo"
DEVICES_PER_GRID = 28
KIND_WEIGHTS = {
    "panic_button": 40,
    "pendant": 15,
    "alarm_column": 5,
    "smoke_detector": 15,
    "gas_detector": 10,
    "fall_detector": 10,
    "door_sensor": 5,
}
SURNAMES = "王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英"


@dataclass(frozen=True, slots=True)
class Unit:
    code: str
    level: str
    parent: str | None
    name: str
    name_en: str
    path: tuple[str, ...]


def units() -> list[Unit]:
    city = Unit(CITY[0], "city", None, CITY[1], CITY[2], (CITY[0],))
    out = [city]
    for dcode, dname, den in DISTRICTS:
        d = Unit(dcode, "district", city.code, dname, den, (*city.path, dcode))
        out.append(d)
        for si, (sname, sen) in enumerate(STREETS, 1):
            s = Unit(f"{dcode}{si:03d}", "street", d.code, sname, sen, (*d.path, f"{dcode}{si:03d}"))
            out.append(s)
            for ci, (cname, cen) in enumerate(COMMUNITIES, 1):
                ccode = f"{s.code}{ci:03d}"
                c = Unit(ccode, "community", s.code, cname, cen, (*s.path, ccode))
                out.append(c)
                for gi in range(1, GRIDS_PER_COMMUNITY + 1):
                    gcode = f"{ccode}{gi:03d}"
                    out.append(Unit(gcode, "grid", ccode, f"{cname}第{gi}网格", f"{cen} grid {gi}", (*c.path, gcode)))
    return out


def _person(rng: random.Random) -> str:
    return rng.choice(SURNAMES) + rng.choice(GIVEN) + rng.choice(["", *GIVEN])


async def seed(conn: asyncpg.Connection[Any], settings: Settings, *, seed_value: int = 2026) -> dict[str, int]:
    """Load the demo city; safe to run again (existing rows are left as they are)."""
    rng = random.Random(seed_value)
    all_units = units()
    async with conn.transaction():
        await conn.executemany(
            """INSERT INTO units (code, level, parent_code, name, name_en, path)
               VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (code) DO NOTHING""",
            [(u.code, u.level, u.parent, u.name, u.name_en, list(u.path)) for u in all_units],
        )
        officers = []
        for u in all_units:
            if u.level == "grid":
                officers.append((f"go-{u.code}", u.code, _person(rng), "grid_officer"))
            else:
                for n in (1, 2):
                    officers.append((f"do-{u.code}-{n}", u.code, _person(rng), "duty_officer"))
        officers.append(("admin-990100", CITY[0], "系统管理员", "admin"))
        await conn.executemany(
            """INSERT INTO officers (officer_id, unit_code, name, role, phone)
               VALUES ($1, $2, $3, $4, '') ON CONFLICT (officer_id) DO NOTHING""",
            officers,
        )
        # Every demo officer is on a year-long shift starting yesterday.
        await conn.execute(
            """INSERT INTO duty_shifts (officer_id, during)
               SELECT o.officer_id, tstzrange(now() - interval '1 day', now() + interval '365 days')
                 FROM officers o
                WHERE o.officer_id = ANY($1::text[])
                  AND NOT EXISTS (SELECT 1 FROM duty_shifts s WHERE s.officer_id = o.officer_id)""",
            [o[0] for o in officers],
        )
        # Demo officers sign in to the duty desk with DEMO_OFFICER_PASSWORD (demo only).
        missing = await conn.fetch(
            "SELECT officer_id FROM officers WHERE password_hash IS NULL AND officer_id = ANY($1::text[])",
            [o[0] for o in officers],
        )
        if missing:
            encoded = hash_officer_password(DEMO_OFFICER_PASSWORD)  # one hash: the same password for all
            await conn.execute(
                "UPDATE officers SET password_hash = $2, password_changed_at = now() "
                "WHERE officer_id = ANY($1::text[])",
                [r["officer_id"] for r in missing],
                encoded,
            )
        kinds = list(KIND_WEIGHTS)
        weights = list(KIND_WEIGHTS.values())
        devices = []
        for u in all_units:
            if u.level != "grid":
                continue
            for n in range(1, DEVICES_PER_GRID + 1):
                device_id = f"dev-{u.code}-{n:03d}"
                kind = rng.choices(kinds, weights)[0]
                building = rng.randint(1, 12)
                address = f"{u.name} {building}号楼{rng.randint(1, 4)}单元{rng.randint(1, 18)}0{rng.randint(1, 4)}"
                note = rng.choice(["", "独居老人", "行动不便", "有心脏病史", "独居老人，听力差"])
                devices.append(
                    (
                        device_id,
                        u.code,
                        kind,
                        address,
                        note,
                        hash_password(demo_password(settings, device_id)),
                        f"{building}号楼",
                    )
                )
        await conn.executemany(
            """INSERT INTO devices (device_id, grid_code, kind, address, resident_note, mqtt_password_hash,
                                  building)
               VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (device_id) DO NOTHING""",
            devices,
        )
    return {"units": len(all_units), "officers": len(officers), "devices": len(devices)}
