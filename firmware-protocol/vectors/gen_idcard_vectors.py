#!/usr/bin/env python3
"""Independent reference implementation of the identity-card SAM module
protocol (GA/T 467 业务终端接口) and the GB/T 490 text block, written from the
public descriptions listed in PROTOCOL.md §7, sharing no code with the crate.

Writes idcard.txt: one vector per line, TAB separated:
  command NAME CMD PARA WIRE_HEX
  reply   NAME SW3 DATA_HEX WIRE_HEX
  text    NAME EXPECT BLOCK_HEX     (EXPECT: `ok DOC NUMBER NAME` or `err KIND`)
  sw3     CODE ZH EN                (the status table of the module documentation)
The Rust tests (tests/idcard_vectors.rs) re-encode and re-decode every line.
"""

PREAMBLE = bytes([0xAA, 0xAA, 0xAA, 0x96, 0x69])


def checksum(b: bytes) -> int:
    x = 0
    for v in b:
        x ^= v
    return x


def command(cmd: int, para: int) -> bytes:
    body = (3).to_bytes(2, "big") + bytes([cmd, para])
    return PREAMBLE + body + bytes([checksum(body)])


def reply(sw3: int, data: bytes) -> bytes:
    body = (len(data) + 4).to_bytes(2, "big") + bytes([0, 0, sw3]) + data
    return PREAMBLE + body + bytes([checksum(body)])


# Published examples (yzsam.com, C# 使用串口分析SAM协议): the find command
# and the find reply.
assert command(0x20, 0x01).hex() == "aaaaaa96690003200122"
assert reply(0x9F, bytes(4)).hex() == "aaaaaa96690008" + "00009f" + "00000000" + "97"


def mod11_2(first17: str) -> str:
    # ISO 7064 MOD 11-2, recursive form.
    p = 0
    for ch in first17:
        p = ((p + int(ch)) * 2) % 11
    c = (12 - p) % 11
    return "X" if c == 10 else str(c)


def number(first17: str) -> str:
    return first17 + mod11_2(first17)


assert number("11010519491231002") == "11010519491231002X"


def field(text: str, width: int) -> bytes:
    raw = text.encode("utf-16-le")
    assert len(raw) <= width, (text, width)
    return raw + " ".encode("utf-16-le") * ((width - len(raw)) // 2)


def resident(name, sex, nation, birth, addr, num, auth, start, end, flag=" ", tail=""):
    # GB/T 490 widths: 30 2 4 16 70 36 30 16 16, then 36 reserved with the
    # type flag at byte 248.
    b = (field(name, 30) + field(sex, 2) + field(nation, 4) + field(birth, 16)
         + field(addr, 70) + field(num, 36) + field(auth, 30) + field(start, 16)
         + field(end, 16))
    assert len(b) == 220
    b += field(tail, 28) + field(flag, 2) + field("", 6)
    assert len(b) == 256
    return b


def permit_j(name, sex, birth, addr, num, auth, start, end, passno, issues):
    b = (field(name, 30) + field(sex, 2) + field("", 4) + field(birth, 16)
         + field(addr, 70) + field(num, 36) + field(auth, 30) + field(start, 16)
         + field(end, 16) + field(passno, 18) + field(issues, 4) + field("", 6)
         + field("J", 2) + field("", 6))
    assert len(b) == 256
    return b


def permanent_2017(en_name, sex, num15, nationality, cn_name, start, end, birth):
    b = (field(en_name, 120) + field(sex, 2) + field(num15, 30) + field(nationality, 6)
         + field(cn_name, 30) + field(start, 16) + field(end, 16) + field(birth, 16)
         + field("20", 4) + field("1100", 8) + field("I", 2) + field("", 6))
    assert len(b) == 256
    return b


def permanent_2023(num):
    # Only the number's place (as the resident card) and the flag are
    # relied on; the rest is left blank here.
    b = field("", 122) + field(num, 36) + field("", 90) + field("Y", 2) + field("", 6)
    assert len(b) == 256
    return b


ZHANG = number("11010519491231002")  # the GB 11643 example
HK = number("81000019900101002")
Y = number("91184019800101001")
TEXTS = [
    ("resident", f"ok resident_id {ZHANG} 张三",
     resident("张三", "2", "01", "19491231", "北京市东城区景山前街4号", ZHANG,
              "北京市公安局东城分局", "20200115", "20400115")),
    ("resident_long_term", f"ok resident_id {ZHANG} 欧阳娜娜",
     resident("欧阳娜娜", "2", "01", "19491231", "北京市", ZHANG, "北京市公安局", "20200115", "长期")),
    ("permit_j", f"ok hmt_residence_permit {HK} 陈大文",
     permit_j("陈大文", "1", "19900101", "广东省深圳市福田区", HK, "深圳市公安局",
              "20190101", "20240101", "H12345678", "01")),
    ("permanent_2023", f"ok foreign_permanent {Y} -", permanent_2023(Y)),
    ("permanent_2017", "err foreign_permanent_2017",
     permanent_2017("SMITH, JOHN", "1", "USA110080101001", "USA", "史密斯",
                    "20170616", "20270616", "19800101")),
    ("unknown_flag", "err unknown_type",
     resident("张三", "2", "01", "19491231", "北京", ZHANG, "北京", "20200115", "20400115", flag="Z")),
    ("bad_check", "err number",
     resident("张三", "2", "01", "19491231", "北京", ZHANG[:17] + "1", "北京", "20200115", "20400115")),
    ("j_with_citizen_number", "err number_kind",
     permit_j("陈大文", "1", "19900101", "深圳", ZHANG, "深圳", "20190101", "20240101", "H1", "01")),
    ("resident_with_9_number", "err number_kind",
     resident("张三", "2", "01", "19800101", "北京", Y, "北京", "20200115", "20400115")),
]

PHOTO = bytes((i * 7 + 3) % 256 for i in range(1024))

REPLIES = [
    ("found", 0x9F, bytes(4)),
    ("no_card", 0x80, b""),
    ("selected", 0x90, bytes(8)),
    ("select_failed", 0x81, b""),
    ("sam_ok", 0x90, b""),
    ("sam_id", 0x90, bytes.fromhex("0501" "0000" "20101010" "00123456" "78901234")),
    ("sam_self_test_failed", 0x60, b""),
    ("sam_not_authorised", 0x66, b""),
    ("read_resident", 0x90, (256).to_bytes(2, "big") + (1024).to_bytes(2, "big") + TEXTS[0][2] + PHOTO),
]

# SW3: the codes issue 20 lists from the module documentation, the Chinese
# in the documentation's terms (PROTOCOL.md §7.3 on what could be checked),
# with cardlink's English.
SW3 = [
    (0x90, "操作成功", "success"),
    (0x9F, "寻找证/卡成功", "card found"),
    (0x80, "寻找证/卡未成功", "no card found"),
    (0x81, "选取证/卡未成功", "selecting the card failed"),
    (0x10, "接收业务终端数据的校验和错", "the module received a bad checksum"),
    (0x11, "接收业务终端数据的长度错", "the module received a bad length"),
    (0x21, "接收业务终端的命令错误", "the module received an unknown command"),
    (0x23, "越权操作", "operation not authorised"),
    (0x24, "无法识别的错误", "unrecognised error"),
    (0x31, "证/卡认证 SAM 失败", "the card failed to authenticate the SAM"),
    (0x32, "SAM 认证证/卡失败", "the SAM failed to authenticate the card"),
    (0x33, "信息验证错误", "the card's data failed verification"),
    (0x40, "无法识别的证/卡类型", "unrecognised card type"),
    (0x41, "读证/卡操作失败", "reading the card failed"),
    (0x47, "取随机数失败", "getting a random number failed"),
    (0x60, "SAM 自检失败，不能接收命令", "the SAM failed its self-test and takes no commands"),
    (0x66, "SAM 没经过授权，无法使用", "the SAM is not authorised and cannot be used"),
    (0x91, "证/卡中此项无内容", "the card holds nothing for this item"),
]
assert len({c for c, _, _ in SW3}) == len(SW3)

COMMANDS = [
    ("sam_status", 0x11, 0xFF),
    ("sam_id", 0x12, 0xFF),
    ("find", 0x20, 0x01),
    ("select", 0x20, 0x02),
    ("read", 0x30, 0x01),
]

if __name__ == "__main__":
    with open("idcard.txt", "w", encoding="utf-8") as f:
        f.write("# identity-card SAM module vectors (generated by gen_idcard_vectors.py)\n")
        for name, cmd, para in COMMANDS:
            f.write(f"command\t{name}\t{cmd:02x}\t{para:02x}\t{command(cmd, para).hex()}\n")
        for name, sw3, data in REPLIES:
            f.write(f"reply\t{name}\t{sw3:02x}\t{data.hex() or '-'}\t{reply(sw3, data).hex()}\n")
        for name, expect, block in TEXTS:
            f.write(f"text\t{name}\t{expect}\t{block.hex()}\n")
        for code, zh, en in SW3:
            f.write(f"sw3\t{code:02x}\t{zh}\t{en}\n")
