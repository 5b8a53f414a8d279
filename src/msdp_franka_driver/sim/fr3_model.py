"""The FR3 arm as MJCF, authored from Franka's published kinematic and inertial parameters.

Joint origins, axes, limits and link inertias are those of the FR3 description (the same kinematics
as Franka's DH table). There are no meshes: links are drawn as capsules that do not collide, since
the safety box keeps the arm itself clear of the scene; only the tool collides. Names follow the
``fr3_`` prefix (``fr3_link0`` is the base frame), which is also what franka-sim looks for.
"""

from __future__ import annotations

from dataclasses import dataclass

from msdp.vocabulary import ROBOT_PREFIX

PREFIX = ROBOT_PREFIX  # joint and link names: fr3_joint1.., fr3_link0 (the base frame)
FLANGE_OFFSET = 0.107  # link8 (flange) along link7's z
JOINT_ARMATURE = 0.1  # rotor inertia seen at the joint, kg m^2; also keeps the light wrist stable at 1 ms
JOINT_DAMPING = 1.0  # viscous friction, Nm s/rad


@dataclass(frozen=True)
class Link:
    origin: tuple[float, float, float]  # joint origin in the parent link frame
    roll: float  # the joint frame's rotation about the parent x axis
    limits: tuple[float, float]  # rad
    effort: float  # Nm
    velocity: float  # rad/s
    mass: float
    com: tuple[float, float, float]
    inertia: tuple[float, float, float, float, float, float]  # ixx iyy izz ixy ixz iyz
    capsule: tuple[float, float, float, float, float, float, float]  # fromto + radius, drawing only


HALF_PI = 1.570796326794897

BASE_MASS = 2.3966
BASE_COM = (-0.0172, 0.0004, 0.0745)
BASE_INERTIA = (0.009, 0.0115, 0.0085, 0.0, 0.002, 0.0)

LINKS = (
    Link(
        (0, 0, 0.333),
        0.0,
        (-2.7501, 2.7501),
        87.0,
        2.62,
        2.9274653454,
        (0.0000004128, -0.0181251324, -0.0386035970),
        (
            0.023927316485107913,
            0.0224821613275756,
            0.006350098258530016,
            1.3317903455714081e-05,
            -0.00011404774918616684,
            -0.0019950320628240115,
        ),
        (0, 0, -0.19, 0, 0, 0, 0.06),
    ),
    Link(
        (0, 0, 0),
        -HALF_PI,
        (-1.7918, 1.7918),
        87.0,
        2.62,
        2.9355370338,
        (0.0031828864, -0.0743221644, 0.0088146084),
        (
            0.041938946257609425,
            0.02514514885014724,
            0.06170214472888839,
            0.00020257331521090626,
            0.004077784227179924,
            -0.0042252158006570156,
        ),
        (0, 0, 0, 0, -0.316, 0, 0.06),
    ),
    Link(
        (0, -0.316, 0),
        HALF_PI,
        (-2.9065, 2.9065),
        87.0,
        2.62,
        2.2449013699,
        (0.0407015686, -0.0048200565, -0.0289730823),
        (
            0.02410142547240885,
            0.01974053266708178,
            0.019044494482244823,
            0.002404694559042109,
            -0.002856269270114313,
            -0.002104212683891874,
        ),
        (0, 0, -0.1, 0.0825, 0, 0, 0.055),
    ),
    Link(
        (0.0825, 0, 0),
        HALF_PI,
        (-3.0481, -0.1458),
        87.0,
        2.62,
        2.6155955791,
        (-0.0459100965, 0.0630492960, -0.0085187868),
        (
            0.03452998321913202,
            0.028881621933049058,
            0.04125471171146641,
            0.01322552265982813,
            0.01015142998484113,
            -0.0009762833870704552,
        ),
        (0, 0, 0, -0.0825, 0.1, 0, 0.055),
    ),
    Link(
        (-0.0825, 0.384, 0),
        -HALF_PI,
        (-2.8101, 2.8101),
        12.0,
        5.26,
        2.3271207594,
        (-0.0016039605, 0.0292536262, -0.0972965990),
        (
            0.051610278463662895,
            0.04787729713371481,
            0.016423625579357254,
            -0.005715173387783472,
            -0.0035673167625872135,
            0.010673985108535986,
        ),
        (0, 0, -0.25, 0, 0, 0, 0.045),
    ),
    Link(
        (0, 0, 0),
        HALF_PI,
        (0.54092, 4.5205),
        12.0,
        4.18,
        1.8170376524,
        (0.0597131221, -0.0410294666, -0.0101692726),
        (
            0.005412333594383447,
            0.014058329545509979,
            0.016080817924212554,
            0.006193456360285834,
            0.0014219289306117652,
            -0.0013140753741120031,
        ),
        (0, 0, 0, 0.088, 0, 0, 0.045),
    ),
    Link(
        (0.088, 0, 0),
        HALF_PI,
        (-3.0196, 3.0196),
        12.0,
        5.26,
        0.6271432862,
        (0.0045225817, 0.0086261921, -0.0161633251),
        (
            0.00021092389150104718,
            0.00017718568002411474,
            5.993190599659971e-05,
            -2.433299114461931e-05,
            4.564480393778983e-05,
            8.744070223226438e-05,
        ),
        (0, 0, -0.03, 0, 0, FLANGE_OFFSET, 0.04),
    ),
)

EFFORT_LIMITS = tuple(link.effort for link in LINKS)


def format_vector(values) -> str:
    """Numbers as an MJCF attribute string."""
    return " ".join(f"{v:.10g}" for v in values)


def arm_bodies(tool_xml: str = "") -> str:
    """The arm's body tree (base ``fr3_link0`` .. flange ``fr3_link8``), with ``tool_xml`` inside the flange."""
    inner = (
        f'<body name="{PREFIX}link8" pos="0 0 {FLANGE_OFFSET}">'
        f'<site name="{PREFIX}flange" size="0.005" rgba="1 0 0 0"/>{tool_xml}</body>'
    )
    for index in range(len(LINKS), 0, -1):
        link = LINKS[index - 1]
        inner = (
            f'<body name="{PREFIX}link{index}" pos="{format_vector(link.origin)}" euler="{link.roll:.15g} 0 0">'
            f'<inertial pos="{format_vector(link.com)}" mass="{link.mass}" '
            f'fullinertia="{format_vector(link.inertia)}"/>'
            f'<joint class="arm" name="{PREFIX}joint{index}" range="{format_vector(link.limits)}" actuatorfrcrange="'
            f'{-link.effort} {link.effort}"/>'
            f'<geom class="arm" fromto="{format_vector(link.capsule[:6])}" size="{link.capsule[6]}"/>{inner}</body>'
        )
    return (
        f'<body name="{PREFIX}link0">'
        f'<inertial pos="{format_vector(BASE_COM)}" mass="{BASE_MASS}" fullinertia="{format_vector(BASE_INERTIA)}"/>'
        f'<geom class="arm" fromto="0 0 0 0 0 0.2" size="0.07"/>{inner}</body>'
    )


def arm_defaults() -> str:
    return (
        f'<default class="arm"><joint axis="0 0 1" armature="{JOINT_ARMATURE}" damping="{JOINT_DAMPING}"/>'
        '<geom type="capsule" contype="0" conaffinity="0" rgba="0.92 0.92 0.94 1" group="1"/></default>'
    )


def arm_motors() -> str:
    """Torque actuators, one per joint, limited to the joint's rated torque."""
    return "".join(
        f'<motor name="{PREFIX}motor{i}" joint="{PREFIX}joint{i}" ctrlrange="{-e} {e}"/>'
        for i, e in enumerate(EFFORT_LIMITS, start=1)
    )


def standalone_arm_mjcf() -> str:
    """A complete arm-only model, e.g. for franka-sim's ``FR3_MJCF`` setting."""
    return (
        '<mujoco model="fr3"><compiler angle="radian" eulerseq="XYZ" autolimits="true"/>'
        f'<option timestep="0.001"/><default>{arm_defaults()}</default>'
        f"<worldbody>{arm_bodies()}</worldbody><actuator>{arm_motors()}</actuator></mujoco>"
    )
