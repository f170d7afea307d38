"""Pieces of the emulator that need no server: image sniffing, origin parsing."""

from __future__ import annotations

import asyncio
import base64
import struct
from urllib.parse import urlsplit

import pytest

from migrator.emulator import fetcher, forms, imaging
from migrator.emulator.envelope import ApiError
from migrator.emulator.origin import make_image


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("png", "png"),
        ("jpg", "jpeg"),
        ("gif", "gif"),
        ("webp", "webp"),
        ("svg", "svg"),
        ("heic", "heic"),
    ],
)
def test_every_format_is_identified_with_its_size(fmt: str, expected: str) -> None:
    picture = imaging.identify(make_image(120, 34, fmt))

    assert (picture.format, picture.width, picture.height) == (expected, 120, 34)


def test_animated_gif_frames_count_towards_the_area() -> None:
    picture = imaging.identify(make_image(10, 10, "gif", frames=3))

    assert picture.frames == 3


def test_svg_size_comes_from_the_view_box_when_width_is_missing() -> None:
    data = b'<?xml version="1.0"?>\n<svg viewBox="0 0 640 480" xmlns="x"></svg>'

    assert imaging.identify(data) == imaging.Picture("svg", 640, 480)


def test_svg_is_not_held_to_pixel_limits() -> None:
    assert imaging.inspect(make_image(50_000, 50_000, "svg")).format == "svg"


def box(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(body), kind) + body


def test_heic_takes_the_largest_extent_of_a_tiled_image() -> None:
    full = b"\x00" * 4
    tile = box(b"ispe", full + struct.pack(">II", 512, 512))
    grid = box(b"ispe", full + struct.pack(">II", 4032, 3024))
    meta = box(b"meta", full + box(b"iprp", box(b"ipco", tile + grid + tile)))
    data = box(b"ftyp", b"mif1" + b"\x00" * 4 + b"mif1heic") + meta

    assert imaging.identify(data) == imaging.Picture("heic", 4032, 3024)


def test_heic_without_a_size_is_refused() -> None:
    data = b"\x00\x00\x00\x10ftypheic\x00\x00\x00\x00"

    with pytest.raises(imaging.ImageRejected) as refused:
        imaging.identify(data)

    assert refused.value.code == 5455


def test_basic_auth_comes_from_the_url_userinfo() -> None:
    headers = fetcher._headers(urlsplit("http://me:s%40cret@127.0.0.1/a.png"))

    expected = base64.b64encode(b"me:s@cret").decode()
    assert f"Authorization: Basic {expected}\r\n" in headers


def test_chunked_bodies_are_joined() -> None:
    async def read() -> bytes:
        reader = asyncio.StreamReader()
        reader.feed_data(b"4\r\nabcd\r\n3;x=y\r\nefg\r\n0\r\n\r\n")
        reader.feed_eof()
        return await fetcher._read_chunked(reader)

    assert asyncio.run(read()) == b"abcdefg"


def test_jpeg_size_is_read_past_other_segments() -> None:
    exif = b"\xff\xe1" + struct.pack(">H", 6) + b"Exif"
    frame = b"\xff\xc2" + struct.pack(">HBHHB", 11, 8, 3024, 4032, 3) + b"\x00" * 6
    data = b"\xff\xd8" + exif + b"\xff" + frame + b"\xff\xd9"

    assert imaging.identify(data) == imaging.Picture("jpeg", 4032, 3024)


def test_jpeg_without_a_frame_is_refused() -> None:
    with pytest.raises(imaging.ImageRejected):
        imaging.identify(b"\xff\xd8\xff\xe0\x00\x04ab\xff\xd9")


def test_multipart_fields_are_split_at_their_boundaries() -> None:
    body = (
        b"preamble\r\n--b0\r\n"
        b'Content-Disposition: form-data; name="id"\r\n\r\n'
        b"a/b\r\n--b0\r\n"
        b'Content-Disposition: form-data; name="file"; filename="x;\\"y\\".png"\r\n'
        b"Content-Type: image/png\r\n\r\n"
        b"x--b0 inside\r\n\r\nbytes\r\n--b0\r\n"
        b'Content-Disposition: form-data; name="id"\r\n\r\n'
        b"second\r\n--b0--\r\n"
    )

    form = forms.parse_form(body, b"b0")

    assert form["id"] == "a/b"
    assert form["file"] == forms.FilePart(
        'x;"y".png', "image/png", b"x--b0 inside\r\n\r\nbytes"
    )


@pytest.mark.parametrize(
    "body",
    [
        b'--b0\r\nContent-Disposition: form-data; name="id"\r\n\r\nx',
        b"--b0\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b0--",
        b"--b0\r\nno blank line\r\n--b0--",
    ],
    ids=["unclosed", "no-name", "no-headers"],
)
def test_malformed_multipart_bodies_are_5400(body: bytes) -> None:
    with pytest.raises(ApiError) as refused:
        forms.parse_form(body, b"b0")

    assert refused.value.code == 5400
