"""Realistic sample messages: what the demo shows and the benchmarks and tests parse.

`emergency_invite()` is what a caller UA sends for 911 from Times Square: Request-URI and
To `urn:service:sos`, location by value (`Geolocation: <cid:...>`, RFC 6442 §4.1) in a
multipart/mixed body with the SDP offer and a PIDF-LO with a GML point (RFC 5491). No
Resource-Priority: the VSP adds it.
"""

from __future__ import annotations

BOUNDARY = "boundary-ng911-1f2e3d"
LOCATION_CID = "caller-loc-7a3f9c@ua.example.net"

SDP = (
    "v=0\r\n"
    "o=caller 2890844526 2890844526 IN IP4 192.0.2.10\r\n"
    "s=emergency call\r\n"
    "c=IN IP4 192.0.2.10\r\n"
    "t=0 0\r\n"
    "m=audio 49170 RTP/AVP 0 8 101\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-15\r\n"
    "a=sendrecv\r\n"
)

PIDF = (
    '<?xml version="1.0" encoding="UTF-8"?>\r\n'
    '<presence xmlns="urn:ietf:params:xml:ns:pidf"\r\n'
    '    xmlns:gp="urn:ietf:params:xml:ns:pidf:geopriv10"\r\n'
    '    xmlns:gml="http://www.opengis.net/gml"\r\n'
    '    xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"\r\n'
    '    entity="sip:+12125550123@vsp.example.net">\r\n'
    '  <dm:device id="caller-device">\r\n'
    "    <gp:geopriv>\r\n"
    "      <gp:location-info>\r\n"
    '        <gml:Point srsName="urn:ogc:def:crs:EPSG::4326">\r\n'
    "          <gml:pos>40.7580 -73.9855</gml:pos>\r\n"
    "        </gml:Point>\r\n"
    "      </gp:location-info>\r\n"
    "      <gp:usage-rules/>\r\n"
    "      <gp:method>GPS</gp:method>\r\n"
    "    </gp:geopriv>\r\n"
    "    <dm:timestamp>2026-11-25T15:00:00Z</dm:timestamp>\r\n"
    "  </dm:device>\r\n"
    "</presence>\r\n"
)


def emergency_body() -> bytes:
    return (
        f"--{BOUNDARY}\r\n"
        "Content-Type: application/sdp\r\n"
        "\r\n"
        f"{SDP}\r\n"
        f"--{BOUNDARY}\r\n"
        "Content-Type: application/pidf+xml\r\n"
        f"Content-ID: <{LOCATION_CID}>\r\n"
        "\r\n"
        f"{PIDF}\r\n"
        f"--{BOUNDARY}--\r\n"
    ).encode()


def emergency_invite() -> bytes:
    """A ~1.5 KB 911 INVITE from a caller UA to its VSP proxy, over UDP."""
    body = emergency_body()
    head = (
        "INVITE urn:service:sos SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n"
        "Max-Forwards: 70\r\n"
        'From: "Caller" <sip:+12125550123@vsp.example.net>;tag=1928301774\r\n'
        "To: <urn:service:sos>\r\n"
        "Call-ID: a84b4c76e66710@192.0.2.10\r\n"
        "CSeq: 314159 INVITE\r\n"
        "Contact: <sip:+12125550123@192.0.2.10:5060>\r\n"
        f"Geolocation: <cid:{LOCATION_CID}>\r\n"
        "Geolocation-Routing: yes\r\n"
        "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE\r\n"
        "Supported: geolocation, timer\r\n"
        "User-Agent: ng911-ua/0.1\r\n"
        f"Content-Type: multipart/mixed;boundary={BOUNDARY}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode() + body


def ringing() -> bytes:
    """The 180 a PSAP sends back (through the ESRP and the VSP) for `emergency_invite()`."""
    return (
        b"SIP/2.0 180 Ringing\r\n"
        b"Via: SIP/2.0/UDP vsp.example.net:5060;branch=z9hG4bKvsp1a2b;received=198.51.100.5\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport=5060"
        b";received=192.0.2.10\r\n"
        b"Record-Route: <sip:esrp.esinet.example;lr>, <sip:vsp.example.net;lr>\r\n"
        b'From: "Caller" <sip:+12125550123@vsp.example.net>;tag=1928301774\r\n'
        b"To: <urn:service:sos>;tag=psap-a6c85cf\r\n"
        b"Call-ID: a84b4c76e66710@192.0.2.10\r\n"
        b"CSeq: 314159 INVITE\r\n"
        b"Contact: <sip:manhattan@psap.esinet.example:5060>\r\n"
        b"Content-Length: 0\r\n"
        b"\r\n"
    )


def ok_with_sdp() -> bytes:
    """The PSAP's 200 OK with its SDP answer."""
    sdp = (
        b"v=0\r\n"
        b"o=psap 2890844527 2890844527 IN IP4 203.0.113.20\r\n"
        b"s=-\r\n"
        b"c=IN IP4 203.0.113.20\r\n"
        b"t=0 0\r\n"
        b"m=audio 3456 RTP/AVP 0 101\r\n"
        b"a=rtpmap:0 PCMU/8000\r\n"
        b"a=rtpmap:101 telephone-event/8000\r\n"
        b"a=sendrecv\r\n"
    )
    head = (
        "SIP/2.0 200 OK\r\n"
        "Via: SIP/2.0/UDP vsp.example.net:5060;branch=z9hG4bKvsp1a2b;received=198.51.100.5\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport=5060"
        ";received=192.0.2.10\r\n"
        "Record-Route: <sip:esrp.esinet.example;lr>, <sip:vsp.example.net;lr>\r\n"
        'From: "Caller" <sip:+12125550123@vsp.example.net>;tag=1928301774\r\n'
        "To: <urn:service:sos>;tag=psap-a6c85cf\r\n"
        "Call-ID: a84b4c76e66710@192.0.2.10\r\n"
        "CSeq: 314159 INVITE\r\n"
        "Contact: <sip:manhattan@psap.esinet.example:5060>\r\n"
        "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(sdp)}\r\n"
        "\r\n"
    ).encode()
    return head + sdp
