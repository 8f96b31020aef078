"""CLASS.html: the printable class sheet (a poster, then one cut-out slip per student).

The poster says how to join the Wi-Fi (name, passphrase and a Wi-Fi QR code when the box serves
its own hotspot; only the name when it serves an existing network) and the hub's address with a
QR code, both large. Then the slips: name, password, address and a QR code of the login page with
the name filled in. Laid out for both A4 and US Letter: every page fits 190 x 255 mm, the part the
two have in common inside 10 mm margins.

Pure: `class_sheet` gathers frozen facts, `render_class_sheet` turns them into HTML. The sheet holds
passwords: only the box's root and enrolled sticks receive it (see conjuringd/sticks/stickfiles.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from conjuringd.config.model import CustomConfig, NetworkSettings
from conjuringd.htmlpage import esc, page
from conjuringd.qr import qr_svg, wifi_payload
from conjuringd.reconcile.model import NetworkObserved
from conjuringd.urls import login_url

FILE_NAME = "CLASS.html"
SLIPS_PER_PAGE = 10  # 2 columns x 5 rows


@dataclass(frozen=True)
class Wifi:
    ssid: str = ""  # "" = not known (a wired network, or networking left alone)
    passphrase: str = field(default="", repr=False)  # only for the box's own hotspot
    own: bool = False  # the box's own hotspot: conjuring.toml says its name and passphrase

    @property
    def payload(self) -> str:
        """The Wi-Fi QR code's text; "" when students cannot join from it (not the box's hotspot)."""
        return wifi_payload(self.ssid, self.passphrase) if self.own and self.ssid else ""


@dataclass(frozen=True)
class Login:
    name: str
    password: str = field(repr=False)
    admin: bool = False


@dataclass(frozen=True)
class ClassSheet:
    address: str  # what students type (conjuringd.urls.student_address)
    wifi: Wifi = Wifi()
    logins: tuple[Login, ...] = field(default=(), repr=False)
    box: str = ""  # host name
    made: str = ""  # ISO 8601 time, UTC

    def login_url(self, login: Login) -> str:
        return login_url(self.address, login.name)


def wifi_of(network: NetworkSettings, observed: NetworkObserved | None) -> Wifi:
    """The Wi-Fi students join: the box's own hotspot when conjuring.toml describes it, else the name
    of the network the box serves on as NetworkManager reports it (its passphrase is not the box's)."""
    if network.serve == "none":
        return Wifi()
    if network.hotspot.ssid:
        return Wifi(network.hotspot.ssid, network.hotspot.passphrase, own=True)
    return Wifi(observed.ssid if observed is not None else "")


def class_sheet(config: CustomConfig, observed: NetworkObserved | None, address: str, box: str = "",
                made: str = "") -> ClassSheet:
    """The sheet of a resolved configuration (generated passwords filled in): students first, then admins."""
    users = sorted(config.users, key=lambda u: u.admin)  # stable: users.csv's order within each group
    logins = tuple(Login(u.name, u.password, u.admin) for u in users)
    return ClassSheet(address, wifi_of(config.settings.network, observed), logins, box, made)


# --- rendering -------------------------------------------------------------------------------

CSS = """
@page { margin: 10mm; }
.page { width: 190mm; height: 255mm; margin: 0 auto; overflow: hidden; position: relative;
        display: flex; flex-direction: column; background: #fff; }
@media screen { .page { box-sizing: content-box; padding: 10mm; margin: 8mm auto;
                        box-shadow: 0 1mm 6mm rgba(0,0,0,.2); } }
@media print { .page { break-after: page; } .page:last-of-type { break-after: auto; } }
.howto { max-width: 190mm; margin: 6mm auto 14mm; padding: 3mm 5mm; background: #fff8d6; border: 1px solid #e6cf6b;
         border-radius: 2mm; font-size: 11pt; }
svg.qr { display: block; background: #fff; shape-rendering: crispEdges; }
.poster header { border-bottom: 1.2mm solid #1f5f8b; padding-bottom: 3mm; margin-bottom: 5mm; }
.poster h1 { font-size: 32pt; color: #1f5f8b; }
.poster header p { margin: 1.5mm 0 0; font-size: 12pt; color: #555; }
.step { display: flex; gap: 6mm; align-items: center; padding: 4mm 0 5mm; border-bottom: 0.4mm solid #d5dde3; }
.step:last-of-type { border-bottom: none; }
.step .text { flex: 1; min-width: 0; }
.step h2 { font-size: 20pt; margin-bottom: 3mm; }
.n { display: inline-block; width: 11mm; height: 11mm; border-radius: 50%; background: #1f5f8b; color: #fff;
     text-align: center; line-height: 11mm; font-size: 16pt; margin-right: 2mm; vertical-align: 1mm; }
.label { font-size: 10pt; text-transform: uppercase; letter-spacing: .08em; color: #666; margin: 2mm 0 0; }
.big { font-size: 26pt; font-weight: bold; margin: 0.5mm 0 0; overflow-wrap: anywhere; }
.address { font-size: 28pt; font-weight: bold; margin: 0 0 2mm; overflow-wrap: anywhere; color: #10384f; }
.hub { flex-wrap: wrap; align-content: flex-start; row-gap: 0; }
.hub h2, .hub .address { flex: 0 0 100%; }
.note { font-size: 12pt; color: #444; margin: 2.5mm 0 0; }
.step svg.qr { width: 68mm; height: 68mm; flex: none; }
.footer { margin-top: auto; font-size: 9pt; color: #777; display: flex; justify-content: space-between; gap: 4mm;
          padding-top: 2mm; }
.slips h2 { font-size: 13pt; margin-bottom: 2mm; }
.grid { display: grid; grid-template-columns: 95mm 95mm; grid-auto-rows: 47mm; border-top: 0.35mm dashed #888;
        border-left: 0.35mm dashed #888; }
.slip { display: flex; gap: 3mm; align-items: center; padding: 3mm 3.5mm; border-right: 0.35mm dashed #888;
        border-bottom: 0.35mm dashed #888; overflow: hidden; }
.slip .text { flex: 1; min-width: 0; }
.slip .label { font-size: 7.5pt; margin-top: 1.2mm; }
.slip .label:first-child { margin-top: 0; }
.slip .value { font-size: 13pt; font-weight: bold; margin: 0; overflow-wrap: anywhere; line-height: 1.2; }
.slip .value.url { font-size: 8.5pt; font-weight: normal; }
.slip svg.qr { width: 34mm; height: 34mm; flex: none; }
.slip.admin { box-shadow: inset 1.6mm 0 0 #d9826e; }
.slip .who { font-size: 8pt; color: #a33; font-weight: bold; margin: 0 0 0.5mm; }
"""


def _footer(sheet: ClassSheet, number: int, total: int) -> str:
    made = f"made by conjuringd on {sheet.box or 'this box'}" + (f" at {sheet.made}" if sheet.made else "")
    return (f'<div class="footer"><span>{esc(made)}. This sheet holds passwords: keep it safe.</span>'
            f"<span>page {number} of {total}</span></div>")


def _wifi_step(wifi: Wifi) -> str:
    if not wifi.ssid:
        return ('<div class="step"><div class="text"><h2><span class="n">1</span>Join the network</h2>'
                '<p class="note">Connect to the same network as this box (ask your teacher which one).</p></div></div>')
    if wifi.payload:
        details = (f'<p class="label">Password</p><p class="big mono">{esc(wifi.passphrase)}</p>'
                   '<p class="note">Or point your phone\'s camera at the code to join.</p>')
        code = qr_svg(wifi.payload, f"Join the Wi-Fi {wifi.ssid}")
    else:
        details = '<p class="note">Use this network\'s usual password (ask your teacher).</p>'
        code = ""
    return (f'<div class="step wifi"><div class="text"><h2><span class="n">1</span>Join the Wi-Fi</h2>'
            f'<p class="label">Wi-Fi name</p><p class="big mono">{esc(wifi.ssid)}</p>{details}</div>{code}</div>')


def _address_step(address: str) -> str:
    if not address:
        return ('<div class="step"><div class="text"><h2><span class="n">2</span>Open the hub</h2>'
                '<p class="note">The hub has no address yet: ask your teacher.</p></div></div>')
    return ('<div class="step hub"><h2><span class="n">2</span>Open this address in a browser</h2>'
            f'<p class="address mono">{esc(address)}</p><div class="text">'
            '<p class="note">Type it into the address bar at the top of your browser (Chrome, Firefox, Edge, '
            'Safari), or scan the code with your phone or tablet.</p></div>'
            f'{qr_svg(address, "The hub address")}</div>')


def _poster(sheet: ClassSheet, total: int) -> str:
    login = ('<div class="step"><div class="text"><h2><span class="n">3</span>Log in</h2>'
             '<p class="note">with the name and password on your slip.</p></div></div>')
    return (f'<section class="page poster"><header><h1>Welcome to the class hub</h1>'
            f'<p>Three steps and you are working.</p></header>'
            f'{_wifi_step(sheet.wifi)}{_address_step(sheet.address)}{login}{_footer(sheet, 1, total)}</section>')


def _slip(sheet: ClassSheet, login: Login) -> str:
    who = '<p class="who">TEACHER (ADMIN): keep this slip</p>' if login.admin else ""
    url = sheet.login_url(login)
    code = qr_svg(url, f"Log in as {login.name}") if sheet.address else ""
    return (f'<div class="slip{" admin" if login.admin else ""}"><div class="text">{who}'
            f'<p class="label">Name</p><p class="value mono name">{esc(login.name)}</p>'
            f'<p class="label">Password</p><p class="value mono password">{esc(login.password)}</p>'
            f'<p class="label">Address</p><p class="value mono url">{esc(sheet.address or "ask your teacher")}</p>'
            f"</div>{code}</div>")


def _slip_pages(sheet: ClassSheet, total: int) -> list[str]:
    pages = []
    for start in range(0, len(sheet.logins), SLIPS_PER_PAGE):
        chunk = sheet.logins[start:start + SLIPS_PER_PAGE]
        slips = "".join(_slip(sheet, login) for login in chunk)
        number = len(pages) + 2
        pages.append(f'<section class="page slips"><h2>Student slips: cut along the dashed lines '
                     f'({start + 1}-{start + len(chunk)} of {len(sheet.logins)})</h2>'
                     f'<div class="grid">{slips}</div>{_footer(sheet, number, total)}</section>')
    return pages


def page_count(sheet: ClassSheet) -> int:
    return 1 + -(-len(sheet.logins) // SLIPS_PER_PAGE)


def render_class_sheet(sheet: ClassSheet) -> str:
    """CLASS.html: the poster, then the slips, 10 to a page."""
    total = page_count(sheet)
    howto = ('<p class="howto screen-only">Print this page with your browser (Ctrl+P, or Cmd+P on a Mac) on A4 or '
             'US Letter at 100% scale. The first page goes on the wall; cut the others into slips, one per student.</p>')
    body = howto + _poster(sheet, total) + "".join(_slip_pages(sheet, total))
    return page("Class sheet", CSS, body)


__all__ = ["FILE_NAME", "ClassSheet", "Login", "Wifi", "class_sheet", "page_count", "render_class_sheet", "wifi_of"]
