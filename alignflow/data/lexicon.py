"""Small bilingual word lists the synthetic corpus draws from (data, not code)."""

# English word -> Chinese translation. Lower-case ASCII words of 3-8 letters.
EN_ZH = {
    "apple": "苹果", "banana": "香蕉", "orange": "橙子", "grape": "葡萄", "peach": "桃子",
    "lemon": "柠檬", "melon": "甜瓜", "cherry": "樱桃", "rice": "米饭", "bread": "面包",
    "noodle": "面条", "tea": "茶", "coffee": "咖啡", "milk": "牛奶", "water": "水",
    "egg": "鸡蛋", "fish": "鱼", "beef": "牛肉", "sugar": "糖", "salt": "盐",
    "cat": "猫", "dog": "狗", "horse": "马", "tiger": "老虎", "rabbit": "兔子",
    "bird": "鸟", "mouse": "老鼠", "sheep": "羊", "monkey": "猴子", "panda": "熊猫",
    "duck": "鸭子", "snake": "蛇", "wolf": "狼", "bear": "熊", "lion": "狮子",
    "red": "红色", "blue": "蓝色", "green": "绿色", "yellow": "黄色", "black": "黑色",
    "white": "白色", "purple": "紫色", "pink": "粉色", "gray": "灰色", "brown": "棕色",
    "book": "书", "pen": "笔", "desk": "桌子", "chair": "椅子", "door": "门",
    "window": "窗户", "phone": "手机", "clock": "时钟", "lamp": "灯", "bed": "床",
    "cup": "杯子", "bottle": "瓶子", "bag": "包", "shoe": "鞋", "hat": "帽子",
    "car": "汽车", "bus": "公交车", "train": "火车", "ship": "船", "plane": "飞机",
    "bike": "自行车", "road": "路", "bridge": "桥", "city": "城市", "river": "河",
    "mountain": "山", "sea": "海", "lake": "湖", "forest": "森林", "flower": "花",
    "tree": "树", "grass": "草", "stone": "石头", "sun": "太阳", "moon": "月亮",
    "star": "星星", "cloud": "云", "rain": "雨", "snow": "雪", "wind": "风",
    "fire": "火", "sky": "天空", "night": "夜晚", "morning": "早上", "spring": "春天",
    "summer": "夏天", "autumn": "秋天", "winter": "冬天", "friend": "朋友", "teacher": "老师",
    "student": "学生", "doctor": "医生", "mother": "母亲", "father": "父亲", "child": "孩子",
    "king": "国王", "queen": "女王", "school": "学校", "house": "房子", "garden": "花园",
    "music": "音乐", "song": "歌", "game": "游戏", "movie": "电影", "story": "故事",
    "money": "钱", "paper": "纸", "letter": "信", "word": "词", "name": "名字",
    "hand": "手", "head": "头", "eye": "眼睛", "heart": "心", "face": "脸",
    "happy": "快乐", "sad": "悲伤", "big": "大", "small": "小", "fast": "快",
    "slow": "慢", "hot": "热", "cold": "冷", "new": "新", "old": "旧",
    "good": "好", "bad": "坏", "long": "长", "short": "短", "high": "高",
}

# Sentence parts for sentiment and topic streams: topic -> subjects, in each language.
SUBJECTS = {
    "zh": {
        "电影": ["这部电影", "这部片子", "这个剧本", "男主角的表演", "这部纪录片", "电影的配乐"],
        "餐饮": ["这家餐厅", "这道菜", "这里的咖啡", "他们的面条", "这家的甜点", "厨师的手艺"],
        "电子": ["这款手机", "这台电脑", "这副耳机", "这个相机", "这块手表", "这台电视"],
        "旅行": ["这次旅行", "这家酒店", "这个景点", "导游的服务", "这趟航班", "海边的风景"],
    },
    "en": {
        "film": ["the movie", "this film", "the script", "the lead actor", "the documentary", "the soundtrack"],
        "food": ["the restaurant", "this dish", "the coffee here", "their noodles", "the dessert", "the chef"],
        "tech": ["this phone", "the laptop", "these headphones", "the camera", "this watch", "the new TV"],
        "travel": ["the trip", "the hotel", "this beach", "the tour guide", "the flight", "the view"],
    },
}

PREDICATES = {
    "zh": {
        "积极": ["太棒了", "非常好", "让人惊喜", "很出色", "值得推荐", "让我很满意", "特别精彩", "超出预期"],
        "消极": ["太差了", "非常糟糕", "让人失望", "很一般", "不值得", "让我很生气", "特别无聊", "低于预期"],
    },
    "en": {
        "positive": ["was wonderful", "is excellent", "was a delight", "is amazing", "exceeded my hopes",
                     "was great", "is worth it", "made me happy"],
        "negative": ["was terrible", "is awful", "was a letdown", "is boring", "wasted my time",
                     "was poor", "is not worth it", "made me angry"],
    },
}
