"""Independent cross-check of the simulated meter's clear-day PV energy (sim/tests.rs).

Not run by the tests: it produced the reference table in `clear_day_pv_energy_at_named_places`.
It uses pvlib (Sandia's PV modelling library) with its own solar position (NREL SPA), the
Ineichen-Perez clear sky with pvlib's Linke-turbidity climatology (and, for comparison,
Haurwitz with the Erbs split), isotropic transposition, and the same array, derate and
cell-temperature model as the Rust code: 6 kWp, south, 30 deg tilt, albedo 0.2, system
derate 0.86, -0.4 %/degC, NOCT 45 degC, air temperature from the same climate parameters.

    python3 -m venv /tmp/pv && /tmp/pv/bin/pip install pvlib h5py
    /tmp/pv/bin/python node/src/meter/sim/pvlib_crosscheck.py
"""

import numpy as np
import pandas as pd
import pvlib

# name: latitude, longitude, elevation m, time zone, (annual mean, amplitude, diurnal) degC
PLACES = {
    "Ames": (42.03, -93.62, 290, "America/Chicago", (8.5, 15.5, 6.0)),
    "Phoenix": (33.45, -112.07, 340, "America/Phoenix", (24.0, 10.5, 7.0)),
    "Seattle": (47.61, -122.33, 50, "America/Los_Angeles", (11.5, 7.0, 5.0)),
}
DATES = ["2025-12-21", "2025-03-20", "2025-06-21"]


def day_kwh(place, date, model):
    lat, lon, alt, tz, (mean_c, amp_c, diurnal_c) = PLACES[place]
    loc = pvlib.location.Location(lat, lon, tz, alt)
    times = pd.date_range(date, periods=1440, freq="1min", tz=tz) + pd.Timedelta("30s")
    sun = loc.get_solarposition(times)
    sky = loc.get_clearsky(times, model=model, solar_position=sun)
    if model == "haurwitz":
        split = pvlib.irradiance.erbs(sky["ghi"], sun["apparent_zenith"], times)
        sky = pd.DataFrame({"ghi": sky["ghi"], "dni": split["dni"].fillna(0), "dhi": split["dhi"].fillna(0)})
    poa = pvlib.irradiance.get_total_irradiance(
        30, 180, sun["apparent_zenith"], sun["azimuth"], sky["dni"], sky["ghi"], sky["dhi"],
        albedo=0.2, model="isotropic",
    )["poa_global"].fillna(0)
    doy = times.day_of_year.to_numpy()
    hour = times.hour.to_numpy() + times.minute.to_numpy() / 60
    air = mean_c + amp_c * np.cos(2 * np.pi * (doy - 200) / 365.25) + diurnal_c * np.cos(2 * np.pi * (hour - 15) / 24)
    cell = air + (45 - 20) * poa / 800
    watts = 6000 * poa / 1000 * (1 - 0.004 * (cell - 25)) * 0.86
    return watts.sum() / 60 / 1000


if __name__ == "__main__":
    for place in PLACES:
        for model in ["ineichen", "haurwitz"]:
            row = ", ".join(f"{d}: {day_kwh(place, d, model):.1f}" for d in DATES)
            print(f"{place:8} {model:9} kWh/day  {row}")
