#!/usr/bin/env python3
"""A stand-in Eastron SDM120 / SDM630 energy meter for node/tests/modbus.rs, served by pymodbus.

It is deliberately written with a different Modbus implementation (pymodbus) from the client
under test (tokio-modbus), so that a shared misunderstanding of the protocol cannot hide.

Register map (Eastron's published Modbus protocol documents for the SDM120 and SDM630):

* input registers, function code 0x04, each value an IEEE-754 32-bit float in two registers,
  most significant register first:
    0x0000 / 0x0002 / 0x0004  line-to-neutral volts, phase 1 / 2 / 3 (SDM120: 0x0000 only)
    0x0006 / 0x0008 / 0x000A  current, phase 1 / 2 / 3, A              (SDM120: 0x0006 only)
    0x000C / 0x000E / 0x0010  active power, phase 1 / 2 / 3, W         (SDM120: 0x000C only)
    0x0034                    total system active power, W             (SDM630 only)
    0x0046                    frequency, Hz
    0x0048                    import active energy, kWh
    0x004A                    export active energy, kWh
    0x0156                    total active energy, kWh (import + export)
  Parameters a model does not have read as zero, as Eastron meters answer for parameters that do
  not apply to their wiring.
* holding register 0xFC00 (two registers): the serial number, unsigned 32-bit, high word first.

Usage:
    sdm_server.py --model sdm630 --unit 1 --tcp 0 --state '{"import_kwh": 1.5, ...}'
    sdm_server.py --model sdm120 --unit 7 --rtu /tmp/pty-a --baud 9600 --parity N --stopbits 1

Once it serves, it prints one line `ready port=<tcp port>` (port 0 for RTU) to stdout. It then
reads commands from stdin, one JSON object per line, and answers each with a line `ok`:

    {"import_kwh": 12.5, "power_w": [-300.0]}   update values (keys as in the state below)
    {"silent": true}                             stop answering requests (a dead meter)
    {"silent": false}                            answer again
    {"serial": 87654321}                         another meter now answers at this address
    {"quit": true}                               exit

The state's keys: serial (int), voltage_v, current_a, power_w (lists, one value per phase),
total_power_w (SDM630), frequency_hz, import_kwh, export_kwh (floats), silent (bool).
End of stdin (the test process died) also exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import sys
import threading

from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

INPUT_BLOCK_START = 0x0000
INPUT_BLOCK_LEN = 0x0158  # up to and including the total-energy float at 0x0156
SERIAL_REGISTER = 0xFC00

PHASE_ADDRESSES = {
    "voltage_v": (0x0000, 0x0002, 0x0004),
    "current_a": (0x0006, 0x0008, 0x000A),
    "power_w": (0x000C, 0x000E, 0x0010),
}
PHASES = {"sdm120": 1, "sdm630": 3}

DEFAULT_STATE = {
    "serial": 12345678,
    "voltage_v": [230.0, 230.0, 230.0],
    "current_a": [0.0, 0.0, 0.0],
    "power_w": [0.0, 0.0, 0.0],
    "total_power_w": 0.0,
    "frequency_hz": 50.0,
    "import_kwh": 0.0,
    "export_kwh": 0.0,
    "silent": False,
}


def float_words(value: float) -> list[int]:
    """An IEEE-754 single as two 16-bit registers, most significant first."""
    hi, lo = struct.unpack(">HH", struct.pack(">f", value))
    return [hi, lo]


def input_registers(model: str, state: dict) -> dict[int, list[int]]:
    """The input registers the meter's state gives, by address."""
    regs: dict[int, list[int]] = {}
    phases = PHASES[model]
    for key, addresses in PHASE_ADDRESSES.items():
        values = state[key]
        for phase in range(phases):
            regs[addresses[phase]] = float_words(float(values[phase]))
    if model == "sdm630":
        regs[0x0034] = float_words(float(state["total_power_w"]))
    regs[0x0046] = float_words(float(state["frequency_hz"]))
    regs[0x0048] = float_words(float(state["import_kwh"]))
    regs[0x004A] = float_words(float(state["export_kwh"]))
    regs[0x0156] = float_words(float(state["import_kwh"]) + float(state["export_kwh"]))
    return regs


class Meter:
    """The meter's state, shared between the server (reads) and the command reader (writes)."""

    def __init__(self, model: str, state: dict):
        self.model = model
        self.lock = threading.Lock()
        self.state = dict(DEFAULT_STATE)
        self.update(state)

    def update(self, changes: dict) -> None:
        unknown = set(changes) - set(DEFAULT_STATE)
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)}")
        with self.lock:
            self.state.update(changes)

    async def action(self, function_code, start_address, _address, _count, registers, set_values):
        """Called by pymodbus on every access: fills the registers from the current state."""
        with self.lock:
            state = dict(self.state)
        if state["silent"]:
            # With ignore_missing_devices the server sends nothing back: the client times out,
            # as it does when a meter loses power or its RS-485 pair is cut.
            raise NoSuchIdException("meter is silent")
        if set_values:
            return None  # writes are not part of this meter's test surface
        if function_code == 4:
            registers[:] = [0] * len(registers)
            for address, words in input_registers(self.model, state).items():
                offset = address - start_address
                registers[offset:offset + 2] = words
        elif function_code == 3:
            serial = int(state["serial"]) & 0xFFFFFFFF
            offset = SERIAL_REGISTER - start_address
            registers[offset:offset + 2] = [serial >> 16, serial & 0xFFFF]
        return None


def device(meter: Meter, unit: int) -> SimDevice:
    """An SDM meter at `unit`: separate input and holding register spaces, as on the meter."""
    coils = [SimData(0, count=16, values=False, datatype=DataType.BITS)]
    discrete = [SimData(0, count=16, values=False, datatype=DataType.BITS)]
    holding = [SimData(SERIAL_REGISTER, count=2, values=0, datatype=DataType.REGISTERS)]
    inputs = [SimData(INPUT_BLOCK_START, count=INPUT_BLOCK_LEN, values=0,
                      datatype=DataType.REGISTERS)]
    return SimDevice(unit, simdata=(coils, discrete, holding, inputs), action=meter.action)


def read_commands(meter: Meter, loop: asyncio.AbstractEventLoop, done: asyncio.Event) -> None:
    """Reads JSON commands from stdin (a thread, so the server's loop never blocks)."""
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            command = json.loads(line)
            if command.get("quit"):
                break
            meter.update(command)
            print("ok", flush=True)
        except (ValueError, TypeError, AttributeError) as exc:
            print(f"error {exc}", flush=True)
    loop.call_soon_threadsafe(done.set)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--model", choices=sorted(PHASES), required=True)
    parser.add_argument("--unit", type=int, default=1)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--tcp", type=int, metavar="PORT", help="serve Modbus TCP on 127.0.0.1")
    where.add_argument("--rtu", metavar="DEVICE", help="serve Modbus RTU on a serial device")
    parser.add_argument("--baud", type=int, default=9600)
    parser.add_argument("--parity", choices=["N", "E", "O"], default="N")
    parser.add_argument("--stopbits", type=int, choices=[1, 2], default=1)
    parser.add_argument("--state", default="{}", help="initial state, JSON")
    args = parser.parse_args()

    meter = Meter(args.model, json.loads(args.state))
    context = device(meter, args.unit)
    if args.tcp is not None:
        server = ModbusTcpServer(context, address=("127.0.0.1", args.tcp),
                                 ignore_missing_devices=True)
    else:
        server = ModbusSerialServer(context, port=args.rtu, baudrate=args.baud,
                                    parity=args.parity, stopbits=args.stopbits, bytesize=8,
                                    ignore_missing_devices=True)
    await server.serve_forever(background=True)
    port = 0
    if args.tcp is not None:
        port = server.transport.sockets[0].getsockname()[1]
    print(f"ready port={port}", flush=True)

    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    threading.Thread(target=read_commands, args=(meter, loop, done), daemon=True).start()
    await done.wait()
    await server.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
