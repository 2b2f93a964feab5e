"""`math` scoring cases shared by tests/unit/test_scorers.py (in-process) and tests/integration/
test_reward_service.py (through POST /v1/verify): (response, ground truth, reward, method).

MATH_CASES are the kinds of answers math-verify reads and a cut-out extraction ("last box, else last number")
misses; HACK_CASES are reward hacks that must not pay unless the answer math-verify settles on is the right one.
"""

from __future__ import annotations

# (response, ground truth, reward, method): the kinds of answers math-verify reads that a cut-out extraction misses.
MATH_CASES = [
    # fractions against a/b
    (r"\frac{10}{9}", "10/9", 1.0, "latex"),
    (r"so it is $-\frac{10}{9}$", "-10/9", 1.0, "latex"),
    (r"$\frac13 $", "1/3", 1.0, "latex"),
    (r"\boxed{\dfrac{1}{2}}", "0.5", 1.0, "boxed"),
    (r"\boxed{\tfrac{3}{4}}", "0.75", 1.0, "boxed"),
    ("The answer is 1/2.", "0.5", 1.0, "expr"),
    (r"\frac{10}{9}", "9", 0.0, "latex"),
    (r"\boxed{\frac{1}{3}}", "0.5", 0.0, "boxed"),
    # thousands and decimal separators
    ("1 000", "1000", 1.0, "expr"),
    ("1000,99", "1000.99", 1.0, "expr"),
    ("1,22", "1.22", 1.0, "expr"),
    ("Soucis : 2,74 $ a..", "2.74", 1.0, "expr"),
    ("It costs 7,425,000 in total", "7425000", 1.0, "expr"),
    ("the number is not 10 which is 1,000.99€", "1000.99", 1.0, "expr"),
    ("$1,000.99", "1000.99", 1.0, "expr"),
    (".4", "0.4", 1.0, "expr"),
    (r"\boxed{1,000}", "1000", 1.0, "boxed"),
    ("1 001", "1000", 0.0, "expr"),
    # percent
    ("28 percent", r"$28\%$", 1.0, "expr"),
    ("28 %", r"$28\%$", 1.0, "expr"),
    (r"$\boxed{28}$ pct", r"$28\%$", 1.0, "boxed"),
    (r"\boxed{50\%}", "50", 1.0, "boxed"),
    ("28", "$0.28$", 0.0, "expr"),
    # intervals and sets
    ("$[0,1)$", "$[0,1)$", 1.0, "latex"),
    ("$[0,1)$", "$[0,9)$", 0.0, "latex"),
    ("$[0,9)$", "$(0,9)$", 0.0, "latex"),
    (r"\boxed{\{2, 1\}}", r"\{1,2\}", 1.0, "boxed"),
    (r"\boxed{(0, 1]}", r"\left(0,1\right]", 1.0, "boxed"),
    (r"\boxed{[-1, \infty)}", r"[-1,\infty)", 1.0, "boxed"),
    (r"the roots are $\boxed{-2,1}$.", "-2,1", 1.0, "boxed"),
    (r"\boxed{\{1, 3\}}", r"\{1,2\}", 0.0, "boxed"),
    (r"\boxed{(0, 1)}", "(0,1]", 0.0, "boxed"),
    # unboxed inline and display LaTeX
    ("Answer $ 9 $", "9", 1.0, "latex"),
    (r"Answer \( 9 \)", "9", 1.0, "latex"),
    (r"Answer \[ 9 \]", "9", 1.0, "latex"),
    ("Answer $$ 9 $$", "9", 1.0, "latex"),
    ("Answer \\[ \n 9 \n \\]", "$9$", 1.0, "latex"),
    (r"Answer \( (9+1) \)", "10", 1.0, "latex"),
    (r"$k = \frac{1}{3}$", r"\frac{1}{3}", 1.0, "latex"),
    (r"Answer $ 8 $", "9", 0.0, "latex"),
    # units and \text{}
    (r"\boxed{5\text{ cm}}", "5", 1.0, "boxed"),
    (r"\boxed{12 \text{ inches}}", "12", 1.0, "boxed"),
    (r"$\frac{1}{3} \text{meters}$", "1/3", 1.0, "latex"),
    (r"The distance is $\boxed{125\textnormal{ miles}}.$", "$125$ miles", 1.0, "boxed"),
    (r"the area is $$\boxed{15\mbox{ cm}^2}.$$", r"$15\mbox{ cm}^2$", 1.0, "boxed"),
    ("So she has 18 dollars left.", "18", 1.0, "expr"),
    (r"so $\boxed{\text{Evelyn}}$ is fastest", "Evelyn", 1.0, "boxed"),
    (r"so $\boxed{\text{Evelyn}}$ is fastest", "Briana", 0.0, "boxed"),
    ("So she has 17 dollars left.", "18", 0.0, "expr"),
    # x = 3 forms
    (r"\boxed{x = 3}", "3", 1.0, "boxed"),
    ("$x = 3$", "3", 1.0, "latex"),
    ("so x = 3", "3", 1.0, "expr"),
    (r"\boxed{3}", "x = 3", 1.0, "boxed"),
    ("$x = 5+5+1 = 7 =11$", "$x = 11$", 1.0, "latex"),
    (r"$x \geq 5$", "$x >= 5$", 1.0, "latex"),
    ("$x = 4$", "3", 0.0, "latex"),
    # matrices
    (r"$\begin{pmatrix}1 & 2\\3 & 4\end{pmatrix}$", r"\begin{pmatrix}1&2\\3&4\end{pmatrix}", 1.0, "latex"),
    (
        r"zero: $ \begin{pmatrix}0 & 0 \\0 & 0\end{pmatrix} $",
        r"$\begin{bmatrix}0 & 0 \\0 & 0\end{bmatrix}$",
        1.0,
        "latex",
    ),
    (
        r"$ \left[\begin{array}{cc}1 & 2 \\3 & 4\end{array}\right] $",
        r"$\begin{pmatrix}1 & 2 \\3 & 4\end{pmatrix}$",
        1.0,
        "latex",
    ),
    (r"$\begin{pmatrix}1 & 2 \\ 3 & 5\end{pmatrix}$", r"$\begin{pmatrix}1 & 2 \\ 3 & 4\end{pmatrix}$", 0.0, "latex"),
    # more forms: powers, roots, a worked solution with its box
    (r"\boxed{2^{n-1}}", "2^(n-1)", 1.0, "boxed"),
    (r"\boxed{\sqrt{8}}", r"2\sqrt{2}", 1.0, "boxed"),
    (r"$\boxed{-\frac{7}{3}}$", r"-\frac{7}{3}", 1.0, "boxed"),
    (r"Since $x<2$, $|x-2|=2-x$, so $x-p=\boxed{2-2p}$.", "$2-2p$", 1.0, "boxed"),
    (r"\boxed{2^{n}}", "2^(n-1)", 0.0, "boxed"),
    (r"\boxed{4} though 5 is tempting", "5", 0.0, "boxed"),  # the box wins over a later number
]

# Reward hacking: listing or repeating must not pay unless the answer math-verify settles on is the right one.
HACK_CASES = [
    (r"First \boxed{3}. Wait, that is wrong: \boxed{5}.", "5", 1.0, "boxed"),  # several boxes: the last counts
    (r"First \boxed{3}. Wait, that is wrong: \boxed{5}.", "3", 0.0, "boxed"),
    ("".join(rf"\boxed{{{i}}}" for i in range(1, 51)), "7", 0.0, "boxed"),
    ("".join(rf"\boxed{{{i}}}" for i in range(1, 51)), "1", 0.0, "boxed"),
    ("".join(rf"\boxed{{{i}}}" for i in range(1, 51)), "50", 1.0, "boxed"),  # ... which is this one
    (r"\boxed{1} and \boxed{2} and \boxed{3}", r"\{1,2,3\}", 1.0, "boxed"),  # a multi-part answer stays one
    (r"\boxed{1, 2, 3}", "2", 0.0, "boxed"),
    (r"\boxed{1 \text{ or } 2 \text{ or } 3}", "2", 0.0, "boxed"),
    ("$1$ or $2$ or $3$", "2", 0.0, "latex"),
    ("$1$ or $2$ or $3$", "3", 0.0, "latex"),
    ("1 or 2 or 3", "2", 0.0, "expr"),
    ("1 or 2 or 3", "3", 1.0, "expr"),  # math-verify settles on the last number, and it is right
    ("1, 2, 3, 4, 5, 6, 7, 8, 9, 10", "5", 0.0, "expr"),
    ("What is 12 + 30?", "42", 0.0, "expr"),  # repeating the question reads as 30
]
