"""Calendar arithmetic and ``strftime`` with the semantics the emscripten JS runtime gives a guest.

The node always runs guests in UTC: no host time zone ever reaches a process. Dates are computed
on the proleptic Gregorian calendar with JavaScript's ``Date`` range (±8.64e15 ms); outside it
the JS runtime yields an invalid date, which is mirrored here as ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass

_MS_PER_DAY = 86_400_000
_JS_DATE_LIMIT_MS = 8_640_000_000_000_000
WEEKDAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")
_DAYS_REGULAR = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_DAYS_LEAP = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def is_leap(year: int) -> bool:
    """Gregorian leap-year rule."""
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def days_from_civil(year: int, month0: int, day: int) -> int:
    """Days since 1970-01-01 for a civil date (fields may overflow; month is 0-based)."""
    year += month0 // 12
    month = month0 % 12 + 1
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    mp = (month + 9) % 12
    doy = (153 * mp + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def civil_from_days(days: int) -> tuple[int, int, int]:
    """(year, month0, day) for days since 1970-01-01."""
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 2 if mp < 10 else mp - 10
    return yoe + era * 400 + (month < 2), month, day


@dataclass(frozen=True)
class BrokenDown:
    """The fields of a C ``struct tm`` as the runtime fills them."""

    sec: int
    min: int
    hour: int
    mday: int
    mon: int
    year: int  # years since 1900
    wday: int
    yday: int


def from_epoch_ms(ms: int) -> BrokenDown | None:
    """Break a UTC instant (milliseconds) into calendar fields; ``None`` outside JS Date's range."""
    if abs(ms) > _JS_DATE_LIMIT_MS:
        return None
    days, rem = divmod(ms, _MS_PER_DAY)
    year, mon, mday = civil_from_days(days)
    secs = rem // 1000
    yday = days - days_from_civil(year, 0, 1)
    return BrokenDown(secs % 60, secs // 60 % 60, secs // 3600, mday, mon, year - 1900,
                      (days + 4) % 7, yday)


def to_epoch_ms(year: int, mon: int, mday: int, hour: int, minute: int, sec: int) -> int | None:
    """Normalise possibly out-of-range fields like ``new Date(y, m, d, h, mi, s)`` in UTC."""
    days = days_from_civil(year, mon, 1) + mday - 1
    ms = ((days * 24 + hour) * 60 + minute) * 60_000 + sec * 1000
    return ms if abs(ms) <= _JS_DATE_LIMIT_MS else None


def _pad(value: int | str, width: int, fill: str = "0") -> str:
    return str(value).rjust(width, fill)


def _week_based_year(tm: BrokenDown) -> int:
    def first_week_start(year: int) -> int:
        jan4 = days_from_civil(year, 0, 4)
        return jan4 - (((jan4 + 4) % 7) + 6) % 7  # the Monday on or before 4 January

    year = tm.year + 1900
    this_day = days_from_civil(year, 0, 1) + tm.yday
    this_year = civil_from_days(this_day)[0]
    if first_week_start(this_year) <= this_day:
        return this_year + 1 if first_week_start(this_year + 1) <= this_day else this_year
    return this_year - 1


def _iso_week(tm: BrokenDown) -> int:
    val = (tm.yday + 7 - (tm.wday + 6) % 7) // 7
    if (tm.wday + 371 - tm.yday - 2) % 7 <= 2:
        val += 1
    if not val:
        val = 52
        dec31 = (tm.wday + 7 - tm.yday - 1) % 7
        if dec31 == 4 or (dec31 == 5 and is_leap(tm.year % 400 - 1)):
            val += 1
    elif val == 53:
        jan1 = (tm.wday + 371 - tm.yday) % 7
        if jan1 != 4 and (jan1 != 3 or not is_leap(tm.year)):
            val = 1
    return val


_ALIASES = (
    ("%c", "%a %b %d %H:%M:%S %Y"), ("%D", "%m/%d/%y"), ("%F", "%Y-%m-%d"), ("%h", "%b"),
    ("%r", "%I:%M:%S %p"), ("%R", "%H:%M"), ("%T", "%H:%M:%S"), ("%x", "%m/%d/%y"),
    ("%X", "%H:%M:%S"), ("%Ec", "%c"), ("%EC", "%C"), ("%Ex", "%m/%d/%y"), ("%EX", "%H:%M:%S"),
    ("%Ey", "%y"), ("%EY", "%Y"), ("%Od", "%d"), ("%Oe", "%e"), ("%OH", "%H"), ("%OI", "%I"),
    ("%Om", "%m"), ("%OM", "%M"), ("%OS", "%S"), ("%Ou", "%u"), ("%OU", "%U"), ("%OV", "%V"),
    ("%Ow", "%w"), ("%OW", "%W"), ("%Oy", "%y"),
)


def _gmtoff(off: int) -> str:
    minutes = abs(off) / 60
    value = (minutes / 60) * 100 + (minutes % 60)
    text = str(int(value)) if value == int(value) else repr(value)
    return ("+" if off >= 0 else "-") + ("0000" + text)[-4:]


def strftime(pattern: str, tm: BrokenDown, isdst: int, gmtoff: int, zone: str) -> str:
    """Expand ``pattern`` exactly as emscripten's JS ``strftime`` does (same quirks, same order)."""
    del isdst
    year = tm.year + 1900
    hour12 = 12 if tm.hour == 0 else tm.hour - 12 if tm.hour > 12 else tm.hour
    month_days = _DAYS_LEAP if is_leap(year) else _DAYS_REGULAR
    rules: tuple[tuple[str, object], ...] = (
        ("%a", lambda: WEEKDAYS[tm.wday][:3]),
        ("%A", lambda: WEEKDAYS[tm.wday]),
        ("%b", lambda: MONTHS[tm.mon][:3]),
        ("%B", lambda: MONTHS[tm.mon]),
        ("%C", lambda: _pad(int(year / 100), 2)),
        ("%d", lambda: _pad(tm.mday, 2)),
        ("%e", lambda: _pad(tm.mday, 2, " ")),
        ("%g", lambda: str(_week_based_year(tm))[2:]),
        ("%G", lambda: str(_week_based_year(tm))),
        ("%H", lambda: _pad(tm.hour, 2)),
        ("%I", lambda: _pad(hour12, 2)),
        ("%j", lambda: _pad(tm.mday + sum(month_days[: max(tm.mon, 0)]), 3)),
        ("%m", lambda: _pad(tm.mon + 1, 2)),
        ("%M", lambda: _pad(tm.min, 2)),
        ("%n", lambda: "\n"),
        ("%p", lambda: "AM" if 0 <= tm.hour < 12 else "PM"),
        ("%S", lambda: _pad(tm.sec, 2)),
        ("%t", lambda: "\t"),
        ("%u", lambda: str(tm.wday or 7)),
        ("%U", lambda: _pad((tm.yday + 7 - tm.wday) // 7, 2)),
        ("%V", lambda: _pad(_iso_week(tm), 2)),
        ("%w", lambda: str(tm.wday)),
        ("%W", lambda: _pad((tm.yday + 7 - (tm.wday + 6) % 7) // 7, 2)),
        ("%y", lambda: str(year)[2:]),
        ("%Y", lambda: str(year)),
        ("%z", lambda: _gmtoff(gmtoff)),
        ("%Z", lambda: zone),
        ("%%", lambda: "%"),
    )
    for alias, expansion in _ALIASES:
        pattern = pattern.replace(alias, expansion)
    pattern = pattern.replace("%%", "\0\0")
    for rule, render in rules:
        if rule in pattern:
            pattern = pattern.replace(rule, render())  # type: ignore[operator]
    return pattern.replace("\0\0", "%")
