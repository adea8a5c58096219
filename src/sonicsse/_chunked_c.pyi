MAX_LINE: int

class ChunkedDecoder:
    completed: bool
    leftover: bool
    def __init__(self) -> None: ...
    def decode(self, buffer: bytearray, start: int, end: int) -> tuple[int, int, int]: ...
