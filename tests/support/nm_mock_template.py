"""python-dbusmock template: the `networkmanager` template with the gaps conjuringd needs filled.

Loaded by path (`python -m dbusmock --system --template <this file>`), inside the mock's process.

- ActivateConnection picks a compatible device when given "/", refuses Wi-Fi profiles on
  ethernet devices and AP profiles on devices without the AP capability (errors named as
  NetworkManager names them), and goes ACTIVATING -> ACTIVATED (or -> DEACTIVATED with a
  reason) a few milliseconds later, with Connection.Active.StateChanged and
  PropertiesChanged, like the real one. A shared-IPv4 profile gets 10.42.0.1/24.
- AddAndActivateConnection stores the given settings (mode=ap included) and activates them.
- DeactivateConnection emits StateChanged(DEACTIVATED, disconnected by user).
- Mock methods: ConjuringFailActivation(id, reason), ConjuringActivations().
"""

import dbus
import dbusmock
from dbusmock import MOCK_IFACE
from dbusmock.templates.networkmanager import *  # noqa: F401,F403  (the template's mock methods)
from dbusmock.templates.networkmanager import (
    ACTIVE_CONNECTION_IFACE,
    DEVICE_IFACE,
    MANAGER_IFACE,
    MANAGER_OBJ,
    SETTINGS_OBJ,
    WIRELESS_DEVICE_IFACE,
)
from dbusmock.templates.networkmanager import load as base_load
from gi.repository import GLib

NM_ERR = "org.freedesktop.NetworkManager."
IP4_IFACE = "org.freedesktop.NetworkManager.IP4Config"
COMPATIBLE = {"802-11-wireless": 2, "802-3-ethernet": 1}
WIFI_CAP_AP = 0x40


def load(mock, parameters):
    base_load(mock, parameters)
    nm = dbusmock.get_object(MANAGER_OBJ)
    nm.conj_fail = {}
    nm.conj_activations = []
    nm.conj_counter = [0]
    nm.conj_activate = conj_activate
    nm.conj_deactivate = conj_deactivate
    nm.conj_add_and_activate = conj_add_and_activate
    nm.AddMethod(MANAGER_IFACE, "ActivateConnection", "ooo", "o",
                 "ret = self.conj_activate(self, args[0], args[1], args[2])")
    nm.AddMethod(MANAGER_IFACE, "DeactivateConnection", "o", "", "self.conj_deactivate(self, args[0])")
    nm.AddMethod(MANAGER_IFACE, "AddAndActivateConnection", "a{sa{sv}}oo", "oo",
                 "ret = self.conj_add_and_activate(self, args[0], args[1], args[2])")


def _fits(nm, settings, dev):
    """'' when `settings` can run on device `dev`, else NetworkManager's error (name, text)."""
    obj = dbusmock.get_object(dev)
    ctype = str(settings["connection"]["type"])
    if COMPATIBLE.get(ctype) != int(obj.Get(DEVICE_IFACE, "DeviceType")):
        return ("ConnectionNotAvailable", f"Connection is not available on device {obj.Get(DEVICE_IFACE, 'Interface')}")
    bound = settings["connection"].get("interface-name")
    if bound and str(bound) != str(obj.Get(DEVICE_IFACE, "Interface")):
        return ("ConnectionNotAvailable", "Connection is bound to another interface")
    wireless = settings.get("802-11-wireless", {})
    if str(wireless.get("mode", "")) == "ap":
        if not int(obj.Get(WIRELESS_DEVICE_IFACE, "WirelessCapabilities")) & WIFI_CAP_AP:
            return ("ConnectionNotAvailable", "Device does not support access point mode")
    return ""


def conj_activate(nm, conn, dev, specific):
    settings = dbusmock.get_object(conn).settings
    if str(dev) == "/":
        fitting = [d for d in nm.GetDevices() if not _fits(nm, settings, d)]
        if not fitting:
            raise dbus.exceptions.DBusException("No suitable device found for this connection.",
                                                name=NM_ERR + "UnknownDevice")
        dev = fitting[0]
    else:
        problem = _fits(nm, settings, dev)
        if problem:
            raise dbus.exceptions.DBusException(problem[1], name=NM_ERR + problem[0])
    nm.conj_activations.append((dbus.ObjectPath(conn), dbus.ObjectPath(dev)))
    current = dbusmock.get_object(dev).Get(DEVICE_IFACE, "ActiveConnection")
    if str(current) != "/":
        conj_deactivate(nm, current, reason=3)
    nm.conj_counter[0] += 1
    number = nm.conj_counter[0]
    path = f"/org/freedesktop/NetworkManager/ActiveConnection/{number}"
    nm.AddObject(path, ACTIVE_CONNECTION_IFACE, {
        "Devices": dbus.Array([dbus.ObjectPath(dev)], signature="o"),
        "Type": settings["connection"]["type"],
        "Connection": dbus.ObjectPath(conn),
        "SpecificObject": dbus.ObjectPath(specific),
        "Uuid": settings["connection"]["uuid"],
        "Id": settings["connection"]["id"],
        "State": dbus.UInt32(1),
        "Ip4Config": dbus.ObjectPath("/"),
    }, [])
    actives = list(nm.Get(MANAGER_IFACE, "ActiveConnections")) + [dbus.ObjectPath(path)]
    nm.Set(MANAGER_IFACE, "ActiveConnections", dbus.Array(actives, signature="o"))
    dev_obj = dbusmock.get_object(dev)
    dev_obj.Set(DEVICE_IFACE, "ActiveConnection", dbus.ObjectPath(path))
    fail = nm.conj_fail.pop(str(settings["connection"]["id"]), None)
    GLib.timeout_add(15, _finish, nm, path, dev, settings, number, fail)
    return dbus.ObjectPath(path)


def _finish(nm, path, dev, settings, number, fail):
    ac = dbusmock.get_object(path)
    dev_obj = dbusmock.get_object(dev)
    if fail is not None:
        old = dev_obj.Get(DEVICE_IFACE, "State")
        dev_obj.Set(DEVICE_IFACE, "State", dbus.UInt32(120))
        dev_obj.EmitSignal(DEVICE_IFACE, "StateChanged", "uuu", [dbus.UInt32(120), old, dbus.UInt32(7 if fail == 9 else 1)])
        conj_deactivate(nm, path, reason=fail)
        return False
    if str(settings.get("ipv4", {}).get("method", "")) == "shared":
        ip4 = f"/org/freedesktop/NetworkManager/IP4Config/{number}"
        nm.AddObject(ip4, IP4_IFACE, {"AddressData": dbus.Array(
            [dbus.Dictionary({"address": "10.42.0.1", "prefix": dbus.UInt32(24)}, signature="sv")],
            signature="a{sv}")}, [])
        ac.Set(ACTIVE_CONNECTION_IFACE, "Ip4Config", dbus.ObjectPath(ip4))
    ac.Set(ACTIVE_CONNECTION_IFACE, "State", dbus.UInt32(2))
    ac.EmitSignal(ACTIVE_CONNECTION_IFACE, "StateChanged", "uu", [dbus.UInt32(2), dbus.UInt32(1)])
    nm.SetDeviceActive(dev, path)
    return False


def conj_deactivate(nm, path, reason=2):
    actives = list(nm.Get(MANAGER_IFACE, "ActiveConnections"))
    if dbus.ObjectPath(path) not in actives:
        raise dbus.exceptions.DBusException("Not active", name=NM_ERR + "ConnectionNotActive")
    ac = dbusmock.get_object(path)
    ac.Set(ACTIVE_CONNECTION_IFACE, "State", dbus.UInt32(4))
    ac.EmitSignal(ACTIVE_CONNECTION_IFACE, "StateChanged", "uu", [dbus.UInt32(4), dbus.UInt32(reason)])
    for dev in ac.Get(ACTIVE_CONNECTION_IFACE, "Devices"):
        if str(dbusmock.get_object(dev).Get(DEVICE_IFACE, "ActiveConnection")) == str(path):
            nm.SetDeviceDisconnected(dev)
    actives.remove(dbus.ObjectPath(path))
    nm.Set(MANAGER_IFACE, "ActiveConnections", dbus.Array(actives, signature="o"))
    nm.RemoveObject(path)


def conj_add_and_activate(nm, settings, dev, specific):
    conn = dbusmock.get_object(SETTINGS_OBJ).SettingsAddConnection(settings)
    return (dbus.ObjectPath(conn), conj_activate(nm, conn, dev, specific))


@dbus.service.method(MOCK_IFACE, in_signature="su", out_signature="")
def ConjuringFailActivation(self, conn_id, reason):
    dbusmock.get_object(MANAGER_OBJ).conj_fail[str(conn_id)] = int(reason)


@dbus.service.method(MOCK_IFACE, in_signature="", out_signature="a(oo)")
def ConjuringActivations(self):
    return dbus.Array(dbusmock.get_object(MANAGER_OBJ).conj_activations, signature="(oo)")
