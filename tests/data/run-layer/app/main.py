import sys
sys.path[:0] = ["/opt/ext", "/opt/gen"]
import fast, squares
print(fast.add(2, 3), squares.SQUARES[4])
